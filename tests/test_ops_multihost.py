"""The exported Compose topology, run live as separate local processes, answers as one process does.

Docker cannot run here, so each service of ``docker-compose.yml`` (2 indexer shards, their
head and merger, the encoder, the recommender, the gateway) is started on its own, as its
container would run it: the same ``jina executor ...`` / ``jina gateway ...`` command, with
the in-container port replaced by a free local port, service host names by 127.0.0.1,
in-image paths by this repository, and each shard's volume by an empty temporary folder of
its own. Indexing, searching, deleting and recommending through that gateway must give the
ids and scores a 1-shard ``app.py -t query`` gives on the same data.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
import yaml

from crossmodal.settings import OPS, ROOT
from tests.harness import TINY_MODEL, Server, app_env, data_uri, free_port, http_post, png_bytes, run_app

EXECUTOR_PORT = "8081"  # what Jina's compose export gives every executor inside its container
COLOURS = [(200, 30, 30), (30, 160, 40), (20, 40, 200), (220, 200, 20), (120, 40, 160), (30, 170, 170)]
WORDS = ["red", "green", "blue", "yellow", "purple", "teal"]


def content() -> list[dict]:
    """Texts and images of two owners, enough ids that both shards hold some."""
    docs = []
    for i, (colour, word) in enumerate(zip(COLOURS, WORDS)):
        owner = "alice" if i % 2 else "bob"
        docs.append({"id": f"t{i}", "owner": owner, "modality": "text", "text": f"{word} circles, {i} of them"})
        docs.append({"id": f"t{i}b", "owner": owner, "modality": "text", "text": f"a {word} square"})
        shape = "circle" if i % 2 else "rect"
        docs.append({"id": f"i{i}", "owner": owner, "modality": "image", "uri": data_uri(png_bytes(colour, shape=shape))})
    return docs


def exported(tmp_path: Path, shards: int) -> dict:
    out = tmp_path / "deploy"
    done = run_app("-t", "export", "--format", "compose", "--out", str(out), "--shards", str(shards),
                   "--model", TINY_MODEL, "--pretrained", "none", "--no-auth")
    assert done.returncode == 0, done.stderr[-3000:]
    return yaml.safe_load((out / "docker-compose.yml").read_text())


def local_commands(compose: dict, tmp_path: Path) -> tuple[dict, dict]:
    """Each service's command and environment as a local process; the gateway's two ports."""
    ports = {name: free_port() for name in compose["services"]}
    key = os.urandom(16).hex()
    gateway_ports = [free_port(), free_port()]
    commands = {}
    for name, service in compose["services"].items():
        workspace = tmp_path / "volumes" / name  # one empty folder per service, as a fresh volume
        args = [re.sub(r"\$\$", "$", a) for a in service["command"]]
        args = [a.replace(OPS.image_root, str(ROOT)).replace(OPS.workspace, str(workspace)) for a in args]
        for other, port in ports.items():  # service host names -> this machine
            args = [re.sub(rf"(?<![\w-]){re.escape(other)}:{EXECUTOR_PORT}\b", f"127.0.0.1:{port}", a) for a in args]
        args = [a if a != "0.0.0.0" else "127.0.0.1" for a in args]
        at = args.index("--port")
        if name == "gateway":
            args[at + 1:at + 3] = [str(p) for p in gateway_ports]
        else:
            args[at + 1] = str(ports[name])
        env = dict(e.split("=", 1) for e in service["environment"])
        env = {k: (key if k == "CROSSMODAL_AUTH_KEY" else v.replace(OPS.workspace, str(workspace))) for k, v in env.items()}
        commands[name] = ([str(Path(sys.executable).parent / "jina"), *args],
                          {**app_env(), **env, "PYTHONPATH": str(ROOT)})
    return commands, {"grpc": gateway_ports[0], "http": gateway_ports[1]}


class Topology:
    """Every executor service as its own process group, then the gateway (as compose orders them)."""

    def __init__(self, compose: dict, tmp_path: Path):
        self.commands, self.ports = local_commands(compose, tmp_path)
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.procs: list[subprocess.Popen] = []
        self.by_name: dict[str, subprocess.Popen] = {}

    def _start(self, name: str) -> None:
        command, env = self.commands[name]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                                stdout=(self.logs / f"{name}.log").open("a"), stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.by_name[name] = proc

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a machine or container that dies."""
        os.killpg(self.by_name[name].pid, signal.SIGKILL)
        self.by_name[name].wait(30)

    def restart(self, name: str, timeout: float = 180) -> None:
        """The same service again on its port and volume; ready once every shard answers."""
        self._start(name)
        self._wait_ready(timeout)

    def __enter__(self):
        try:
            for name in self.commands:
                if name != "gateway":
                    self._start(name)
            self._start("gateway")
            self._wait_ready(timeout=300)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            exited = [name for name, p in self.by_name.items() if p.poll() is not None]
            assert not exited, f"exited: {exited}\n{self.log_tail()}"
            try:
                if http_post(self.ports["http"], "/stats", [], timeout=5)[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(1)
        raise TimeoutError(f"the topology was not ready in {timeout}s\n{self.log_tail()}")

    def __exit__(self, *exc):
        for proc in reversed(self.procs):  # the gateway first, as compose stops it
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, if any
            except ProcessLookupError:
                pass
            proc.wait(30)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(self.logs.glob("*.log")))


QUERIES = [{"id": "q-text", "text": "blue circles"}, {"id": "q-image", "uri": data_uri(png_bytes((30, 160, 40)))}]


def matches(found: list) -> dict:
    return {d["id"]: {m: [(x["id"], round(x["score"], 4)) for x in d[f"{m}_matches"] or []]
                      for m in ("text", "image")} for d in found}


def answers(http_port: int) -> dict:
    """Everything compared: index statuses, searches (with and without owner exclusion), a
    delete, the searches again, recommendations for both owners, and the totals."""
    def post(endpoint, data, parameters=None):
        status, body = http_post(http_port, endpoint, data, parameters, timeout=120)
        assert status == 200, (endpoint, body)
        return body["data"]

    def picks(found):
        return [(x["id"], round(x["score"], 4)) for g in ("from_text", "from_image")
                for m in ("text_matches", "image_matches") for x in (found[0][g] or {}).get(m) or []]

    out = {"index": {d["id"]: d["status"] for d in post("/index", content())}}
    out["search"] = matches(post("/search", QUERIES, {"k": 5}))
    out["search_excluding"] = matches(post("/search", QUERIES, {"k": 5, "username": "alice"}))
    out["delete"] = {d["id"]: d["status"] for d in post("/delete", [{"id": "t2"}, {"id": "i3"}, {"id": "nope"}])}
    out["search_after_delete"] = matches(post("/search", QUERIES, {"k": 5}))
    out["reindex"] = {d["id"]: d["status"] for d in post("/index", content()[:3])}
    out["search_after_reindex"] = matches(post("/search", QUERIES, {"k": 5}))
    out["recommend"] = {user: picks(post("/recommend", [{}], {"username": user, "k": 4, "min_cluster_size": 2}))
                        for user in ("alice", "bob")}
    (stats,) = post("/stats", [])
    out["total"] = stats["tags"]["total"]
    return out


def shard_down_and_back(topology: Topology) -> dict:
    """Shard 0 killed: requests fail at once naming it; restarted on its volume: all it had is back."""
    port = topology.ports["http"]
    topology.kill("indexer-0")
    for endpoint, data in (("/search", QUERIES), ("/stats", [])):
        status, body = http_post(port, endpoint, data, {"k": 5} if data else None, timeout=60)  # never a hang
        assert status == 503 and "shard(s) [0] of 2" in body["detail"], (endpoint, status, body)
    topology.restart("indexer-0")
    status, body = http_post(port, "/search", QUERIES, {"k": 5}, timeout=60)
    assert status == 200, body
    (stats,) = http_post(port, "/stats", [])[1]["data"]
    return {"total": stats["tags"]["total"], "search": matches(body["data"])}


@pytest.mark.timeout(900)
def test_exported_two_shard_topology_answers_as_one_shard(tmp_path):
    compose = exported(tmp_path, shards=2)
    assert {"indexer-0", "indexer-1", "indexer-head", "indexer-uses-after"} <= set(compose["services"])
    with Topology(compose, tmp_path) as topology:
        try:
            sharded = answers(topology.ports["http"])
            back = shard_down_and_back(topology)
        except AssertionError:
            print(topology.log_tail())
            raise
    assert back == {"total": sharded["total"], "search": sharded["search_after_reindex"]}
    stores = sorted(p.relative_to(tmp_path / "volumes") for p in (tmp_path / "volumes").rglob("store.sqlite"))
    assert [p.parts[0] for p in stores if p.parts[0].startswith("indexer-")] == ["indexer-0", "indexer-1"], stores

    grpc, http = free_port(), free_port()
    with Server(tmp_path / "single", grpc, http, "--model", TINY_MODEL, "--pretrained", "none"):
        single = answers(http)

    differing = {k: {"sharded": sharded[k], "single": single[k]} for k in single if sharded[k] != single[k]}
    assert not differing, f"the 2-shard topology answers otherwise than one shard: {differing}"
    assert set(single["index"].values()) == {"indexed"}
    assert sharded["delete"] == single["delete"] == {"t2": "deleted", "i3": "deleted", "nope": "not_found"}
    assert all(single["search"]["q-text"].values()) and any(single["recommend"].values())
