"""What tests and benchmarks share: run ``app.py`` (or any Flow) as a user would, in its own
process group, and always stop it; HTTP calls; small pictures and data URIs.

Tests and benchmarks start Flows this way rather than in their own process: Jina
forks executor processes, and forking a process whose torch/FAISS OpenMP thread
pools are already running can deadlock the child.
"""
import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import numpy as np

from crossmodal.serve.flow import free_port  # noqa: F401  (re-exported for tests and benchmarks)
from crossmodal.settings import JINA_QUIET, ROOT

TINY_MODEL = "tiny-clip"  # models/tiny-clip.json, random weights seeded by the loader


def app_env() -> dict:
    return {**os.environ, **JINA_QUIET, "PYTHONUNBUFFERED": "1"}


def run_app(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """One-shot CLI call (index, eval, ...)."""
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=ROOT, env=app_env(),
                          capture_output=True, text=True, timeout=timeout, start_new_session=True)


def http_post(port: int, endpoint: str, data: list, parameters: Optional[dict] = None,
              timeout: float = 60, token: Optional[str] = None) -> tuple[int, dict]:
    body = json.dumps({"data": data, "parameters": parameters or {}}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{endpoint}", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


class Server:
    """``python app.py -t query`` in a new session; ``kill`` mimics a crash of the whole service.

    ``command`` replaces the app.py call (e.g. another Flow); ``ready`` is the HTTP
    endpoint polled until it answers 200 (with ``token``, for servers with authentication on).
    """

    def __init__(self, workspace: Path, grpc_port: int, http_port: int, *extra: str,
                 command: Optional[list[str]] = None, ready: str = "/stats", token: Optional[str] = None):
        self.command = command or [sys.executable, str(ROOT / "app.py"), "-t", "query", "--workspace",
                                   str(workspace), "--grpc-port", str(grpc_port), "--http-port", str(http_port), *extra]
        self.grpc_port, self.http_port, self.ready, self.token = grpc_port, http_port, ready, token
        # app.py prints this once Flow.start() has returned: only then is Ctrl-C handled
        self.banner = None if command else "crossmodal is serving"
        self.proc: Optional[subprocess.Popen] = None
        self.log = Path(workspace).parent / f"server-{Path(workspace).name}.log"

    def start(self, timeout: float = 180) -> "Server":
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=app_env(), stdout=self.log.open("w"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if (http_post(self.http_port, self.ready, [], timeout=5, token=self.token)[0] == 200
                        and (not self.banner or self.banner in self.log.read_text())):
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60) -> None:
        """Ctrl-C, as a user would; escalate to SIGKILL if it does not exit."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self.proc:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of the group, if any
            except ProcessLookupError:
                pass
            self.proc.wait(30)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def png_bytes(color=(200, 30, 30), size=(48, 40), shape: str = "rect") -> bytes:
    """A small distinct picture: a coloured shape on white."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (size[0] // 5, size[1] // 5, size[0] * 4 // 5, size[1] * 4 // 5)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=color)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_uri(blob: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64," + base64.b64encode(blob).decode()
