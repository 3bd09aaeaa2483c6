"""A bounded stop: the service exits within a grace period even when a request is running.

Jina's ``Flow.close`` waits for every executor to finish its current request and for
the gateway's own shutdown, each with its own minute-long timeouts; an executor busy
in a long request (or one already gone after Ctrl-C reached the whole process group)
left the gateway holding its ports. After a stop signal, ``hard_stop_after`` gives the
graceful close ``grace`` seconds, then SIGKILLs every process the service started
and exits. Nothing acknowledged is lost: SQLite is the source of truth and the FAISS
indexes are rebuilt on the next start when their save did not happen.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...), found through /proc."""
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found.extend(children)
        frontier = children
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def hard_stop_after(grace: float, exit_code: int = 0) -> threading.Timer:
    """Start the deadline: after ``grace`` seconds, kill what is left and exit the process.

    The processes are listed when the deadline fires, so executors that exited on
    their own are not touched; the timer is a daemon and is cancelled by a clean exit.
    """
    def expire() -> None:
        print(f"crossmodal: still stopping after {grace:.0f}s, killing the remaining processes",
              file=sys.stderr, flush=True)
        kill_all(descendants(os.getpid()))
        time.sleep(0.5)
        os._exit(exit_code)

    timer = threading.Timer(grace, expire)
    timer.daemon = True
    timer.start()
    return timer
