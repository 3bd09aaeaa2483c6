"""A sharded service answers as a single one, through the real Flow (tiny model).

The reference is a 1-shard workspace; copies of it are resharded (``-t reshard``) to
2 and 4 shards and served with ``--shards``: searches, recommendations and stats must
come back the same (ties aside), and new writes land on exactly one shard.
"""
import os
import re
import shutil
import signal
import sqlite3

import pytest
from docarray import DocList
from jina import Client

from crossmodal.api.schemas import ContentDoc
from crossmodal.index.shards import shard_dir, shard_of
from tests.harness import TINY_MODEL, Server, data_uri, free_port, http_post, png_bytes, run_app

MODEL = ["--model", TINY_MODEL, "--pretrained", "none"]

COLORS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220), "yellow": (240, 220, 10)}
SHAPES = ("circle", "rect")
OWNERS = ("alice", "bob", "carol")
TEXTS = [{"id": f"t{i}", "owner": OWNERS[i % 3], "modality": "text",
          "text": f"{color} {shape} number {i}"} for i, (color, shape) in enumerate(
    (c, s) for c in COLORS for s in ("circle", "square", "star", "cloud", "line", "dot"))]
IMAGES = [{"id": f"i{i}", "owner": OWNERS[(i + 1) % 3], "modality": "image",
           "uri": data_uri(png_bytes(rgb, size=(40 + 4 * i, 36), shape=SHAPES[i % 2]))}
          for i, rgb in enumerate(list(COLORS.values()) * 2)]
QUERIES = [{"id": "q-red", "text": "red circle"}, {"id": "q-blue", "text": "blue star number"},
           {"id": "q-img", "uri": data_uri(png_bytes((200, 30, 30), shape="circle"))}]
RECOMMEND = {"username": "alice", "k": 6, "novelty_threshold": 0.9999, "with_thumbnails": True}


def ranked(matches) -> list[tuple[float, str]]:
    """Results as (score, id), ties put in id order: shards may return equal scores in any order."""
    return sorted(((round(m["score"], 4), m["id"]) for m in matches), key=lambda x: (-x[0], x[1]))


def answers(port: int) -> dict:
    out = {}
    for username in (None, "alice"):
        status, body = http_post(port, "/search", QUERIES, {"k": 5, "username": username})
        assert status == 200, body
        for doc in body["data"]:
            for modality in ("text", "image"):
                out[(doc["id"], username, modality)] = ranked(doc[f"{modality}_matches"])
    status, body = http_post(port, "/recommend", [], RECOMMEND)
    assert status == 200, body
    [doc] = body["data"]
    for group in ("from_text", "from_image"):
        for modality in ("text", "image"):
            picks = doc[group][f"{modality}_matches"]
            out[("recommend", group, modality)] = [(m["id"], round(m["score"], 4)) for m in picks]
            assert all(m["thumbnail"] for m in picks if modality == "image")
    alice = {d["id"]: d for d in TEXTS + IMAGES if d["owner"] == "alice"}
    for seed in doc["seeds"]:  # each interest is named by one of alice's posts and lists its posts
        assert seed["post_id"] in seed["member_ids"] and set(seed["member_ids"]) <= set(alice)
        assert seed["embedding"] is None
        if seed["modality"] == "text":
            assert seed["post_text"] == alice[seed["post_id"]]["text"]
        else:
            assert seed["post_thumbnail"].startswith("data:image/jpeg;base64,")
    keys = {s["key"] for s in doc["seeds"]}
    assert {m["seed"] for g in ("from_text", "from_image") for k in ("text_matches", "image_matches")
            for m in doc[g][k]} <= keys
    out["seeds"] = sorted((s["key"], s["post_id"], tuple(sorted(s["member_ids"]))) for s in doc["seeds"])
    status, body = http_post(port, "/stats", [])
    tags = body["data"][0]["tags"]
    out["stats"] = (tags["total"], tags["count"], tags["owners"])
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    workspace = base / "one"
    with Server(workspace, free_port(), free_port(), *MODEL) as server:
        status, body = http_post(server.http_port, "/index", TEXTS + IMAGES)
        assert status == 200 and {d["status"] for d in body["data"]} == {"indexed"}, body
        expected = answers(server.http_port)
    assert sum(len(v) for k, v in expected.items() if k[0] == "recommend") > 0
    return base, workspace, expected


def _resharded(reference, shards: int):
    base, workspace, _ = reference
    copy = base / f"copy-{shards}"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(workspace, copy, ignore=shutil.ignore_patterns("store.lock"))
    done = run_app("-t", "reshard", "--workspace", str(copy), "--shards", str(shards))
    total = len(TEXTS) + len(IMAGES)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"{total} items on 1 shard\(s\) \[{total}\] -> {total} items on {shards} shard\(s\)", done.stdout)
    return copy


def _stored(workspace, shards: int) -> dict[str, int]:
    """id -> the shard whose store holds it; fails if an id is stored twice or off its shard."""
    where = {}
    for s in range(shards):
        with sqlite3.connect(shard_dir(workspace, s, shards) / "store.sqlite") as conn:
            for (id_,) in conn.execute("SELECT id FROM items"):
                assert id_ not in where, f"{id_} on shards {where[id_]} and {s}"
                assert shard_of(id_, shards) == s
                where[id_] = s
    return where


@pytest.mark.parametrize("shards, extra", [(2, ("--replicas", "2")), (4, ())])
def test_sharded_service_answers_as_one_shard(reference, shards, extra):
    workspace, expected = _resharded(reference, shards), reference[2]
    with Server(workspace, free_port(), free_port(), *MODEL, "--shards", str(shards), *extra) as server:
        got = answers(server.http_port)
        assert got == expected
        grpc = Client(host="127.0.0.1", port=server.grpc_port).post(
            "/recommend", DocList[ContentDoc]([ContentDoc(id="r")]), parameters=RECOMMEND,
            return_type=DocList[ContentDoc])
        assert [(m.id, round(m.score, 4)) for m in grpc[0].from_text.text_matches] == expected[
            ("recommend", "from_text", "text")]
        _, body = http_post(server.http_port, "/stats", [])
        assert [s["shard"] for s in body["data"][0]["tags"]["shards"]] == list(range(shards))
        # writes: a new item, an existing id again, a delete: each reaches the one owning shard
        status, body = http_post(server.http_port, "/index", [
            {"id": "new-1", "owner": "dave", "modality": "text", "text": "purple triangle"},
            {**TEXTS[1], "text": "an updated text"}])
        assert status == 200 and [d["status"] for d in body["data"]] == ["indexed", "updated"], body
        status, body = http_post(server.http_port, "/delete", [{"id": "t2"}, {"id": "never-there"}])
        assert [d["status"] for d in body["data"]] == ["deleted", "not_found"]
        status, body = http_post(server.http_port, "/search", [{"id": "q", "text": "an updated text"}], {"k": 50})
        found = [m["id"] for m in body["data"][0]["text_matches"]]
        assert "t2" not in found and found.count("t1") == 1 and "new-1" in found
        port = server.http_port
        # client mistakes stay client errors on a sharded service, never "shards down"
        for endpoint, data, params in (("/refine", [QUERIES[0]], {"k": 0, "positive": ["t0"]}),
                                       ("/refine", [QUERIES[0]], {"positive": ["never-there"]}),
                                       ("/recommend", [{}], {"username": "alice", "k": 0})):
            status, body = http_post(port, endpoint, data, params)
            assert status == 422, (endpoint, params, body)
        for endpoint in ("/history", "/labels"):  # internal: they hand out embeddings
            status, body = http_post(port, endpoint, [{}], {"username": "alice", "positive": ["t0"]})
            assert status == 422 and "internal" in body["detail"], body
        status, body = http_post(port, "/items", [{}, {"id": ""}, {"id": "t0"}])  # no id: nothing found, no crash
        assert status == 200 and [d["status"] for d in body["data"]] == ["not_found", "not_found", "ok"], body
        status, body = http_post(port, "/index", [{"id": "p", "owner": "x", "modality": "text", "text": "p"}])
        assert status == 200 and not {"__crossmodal_user__", "__posted_at__"} & set(body["parameters"])
        status, body = http_post(server.http_port, "/refine", [QUERIES[0]], {"k": 5, "positive": ["t0"],
                                                                              "negative": ["t3"]})
        assert status == 200, body
        refined = body["data"][0]
        assert {"t0", "t3"}.isdisjoint(m["id"] for m in refined["text_matches"])
        assert refined["feedback"]["positive"] == 1 and refined["feedback"]["negative"] == 1
    stored = _stored(workspace, shards)
    assert len(stored) == len(TEXTS) + len(IMAGES) + 1 and {"new-1", "p"} <= set(stored) and "t2" not in stored


def test_other_shard_count_is_refused_with_the_fix(reference):
    _, workspace, _ = reference
    done = run_app("-t", "query", "--workspace", str(workspace), "--shards", "2", *MODEL,
                   "--grpc-port", str(free_port()), "--http-port", str(free_port()), timeout=120)
    assert done.returncode == 2
    assert "written by 1 shard(s)" in done.stderr and f"-t reshard --workspace {workspace} --shards 2" in done.stderr


def test_killed_shard_fails_fast_and_nothing_acknowledged_is_lost(reference):
    workspace = _resharded(reference, 2)
    server = Server(workspace, free_port(), free_port(), *MODEL, "--shards", "2").start()
    try:
        status, body = http_post(server.http_port, "/index", [
            {"id": f"late-{i}", "owner": "erin", "modality": "text", "text": f"late post {i}"} for i in range(6)])
        assert status == 200 and {d["status"] for d in body["data"]} == {"indexed"}
        os.kill(int((workspace / "shard-0" / "store.lock").read_text()), signal.SIGKILL)
        # "z" hashes onto the dead shard 0, "x" onto shard 1, which applies its part
        assert (shard_of("z", 2), shard_of("x", 2)) == (0, 1)
        posts = [{"id": i, "owner": "erin", "modality": "text", "text": i} for i in ("z", "x")]
        for endpoint, data in (("/search", [QUERIES[0]]), ("/stats", []), ("/index", posts)):
            status, body = http_post(server.http_port, endpoint, data, timeout=60)  # never a hang
            assert status == 503, (endpoint, body)
            assert "shard(s) [0] of 2" in body["detail"] and body["executor"] == "indexer"
    finally:
        server.stop()
    with Server(workspace, free_port(), free_port(), *MODEL, "--shards", "2") as again:
        _, body = http_post(again.http_port, "/stats", [])
        assert body["data"][0]["tags"]["total"] == len(TEXTS) + len(IMAGES) + 6 + 1
        _, body = http_post(again.http_port, "/search", [{"id": "q", "text": "late post"}], {"k": 60})
        found = {m["id"] for m in body["data"][0]["text_matches"]}
        assert {f"late-{i}" for i in range(6)} | {"x"} <= found and "z" not in found
