"""Batching: concurrent requests are encoded together, and nobody can tell.

The encoders merge concurrent /index and /search requests into one batch
(crossmodal/model/batcher.py); each request must still get exactly what it would have got
alone, and a bad document must still fail alone.
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.harness import TINY_MODEL, Server, data_uri, free_port, http_post, png_bytes

MODEL = ["--model", TINY_MODEL, "--pretrained", "none"]
TEXTS = ["a red square", "blue circles everywhere", "two small green triangles on a grey background",
         "yellow", "a very long caption about many shapes of many colours lying on a table " * 2]
COLORS = [(220, 20, 20), (20, 200, 40), (30, 40, 220), (240, 220, 10), (120, 60, 200), (10, 10, 10)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("batching") / "workspace"
    with Server(workspace, free_port(), free_port(), *MODEL) as srv:
        docs = [{"id": f"t{i}", "owner": f"u{i % 2}", "modality": "text", "text": t} for i, t in enumerate(TEXTS)]
        docs += [{"id": f"i{i}", "owner": f"u{i % 2}", "modality": "image", "uri": data_uri(png_bytes(c))}
                 for i, c in enumerate(COLORS)]
        status, body = http_post(srv.http_port, "/index", docs)
        assert status == 200 and {d["status"] for d in body["data"]} == {"indexed"}
        yield srv


def _queries() -> list[dict]:
    texts = [{"id": f"q{i}", "text": t} for i, t in enumerate(TEXTS + ["red", "circles and squares"])]
    images = [{"id": f"qi{i}", "uri": data_uri(png_bytes(c, shape="circle"))} for i, c in enumerate(COLORS)]
    return texts + images


def _search(port: int, query: dict) -> list[tuple[str, float]]:
    status, body = http_post(port, "/search", [query], {"k": 5})
    assert status == 200, body
    [doc] = body["data"]
    return [(m["id"], m["score"]) for key in ("text_matches", "image_matches") for m in doc[key]]


def _assert_same(alone: list, together: list) -> None:
    assert [i for i, _ in together] == [i for i, _ in alone]
    assert [s for _, s in together] == pytest.approx([s for _, s in alone], abs=1e-5)


def test_concurrent_searches_match_one_at_a_time(server):
    queries = _queries() * 3  # 3 copies: batches mix texts of different lengths and images
    alone = [_search(server.http_port, q) for q in queries]
    with ThreadPoolExecutor(len(queries)) as pool:
        together = list(pool.map(lambda q: _search(server.http_port, q), queries))
    for a, t in zip(alone, together):
        _assert_same(a, t)


def test_concurrent_index_keeps_per_document_errors(server):
    def post(i: int) -> dict:
        doc = {"id": f"c{i}", "owner": "carol", "modality": "text", "text": f"concurrent post number {i}"}
        if i == 3:
            doc["text"] = ""  # invalid: must fail alone, not sink the batch it shares
        status, body = http_post(server.http_port, "/index", [doc])
        assert status == 200, body
        return body["data"][0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(post, range(8)))
    assert [r["status"] for r in results] == ["indexed"] * 3 + ["error"] + ["indexed"] * 4
    assert "text" in results[3]["error"]
    for i in (0, 5):  # each stored embedding is the one its own text gets alone
        [(top, score), *_] = _search(server.http_port, {"id": "q", "text": f"concurrent post number {i}"})
        assert top == f"c{i}" and score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_processes_without_a_model_never_load_torch(server):
    """Only the encoder (both towers, one process) maps torch's libraries; the launcher, gateway,
    indexer and recommender do not."""
    pids = _descendants(server.proc.pid)
    with_torch = [pid for pid in pids if _maps_torch(pid)]
    assert len(pids) >= 5, pids  # launcher, gateway, 3 executors
    assert len(with_torch) == 1, {pid: _cmdline(pid) for pid in pids}


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "libtorch" in f.read()


def _cmdline(pid: int) -> str:
    return open(f"/proc/{pid}/cmdline").read().replace("\0", " ")[:120]


def test_openmp_threads_spin_briefly_unless_the_operator_chose():
    """The Flow's processes share the cores: OpenMP threads spin a short while, not libgomp's
    300,000 rounds, and an operator's own OpenMP setting is kept."""
    from crossmodal.serve.flow import openmp_env
    from crossmodal.settings import ENCODER

    assert openmp_env({}) == {"GOMP_SPINCOUNT": str(ENCODER.openmp_spin_count)}
    assert ENCODER.openmp_spin_count < 300_000
    assert openmp_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert openmp_env({"GOMP_SPINCOUNT": "INFINITY"}) == {}
