"""Issue 15 (and the 4xx part of 14) end to end: a hostile client against ``app.py -t query``.

Each test reproduces one numbered finding of the issue. The general server is shared
(tests use ids of their own); the tests that kill an executor, stop the service
mid-request or need a 10,000-post user start servers of their own.
"""
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from docarray import DocList
from jina import Client

from crossmodal.api.schemas import ContentDoc
from crossmodal.serve.shutdown import descendants
from crossmodal.settings import LIMITS
from tests.harness import TINY_MODEL, Server, data_uri, free_port, http_post, png_bytes, unit_rows

MODEL = ["--model", TINY_MODEL, "--pretrained", "none"]


def post_json(port: int, endpoint: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
    """Like ``http_post`` but with the whole body given (header included)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{endpoint}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def raw_http(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Status and body of a hand-written request (to claim a size without sending it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        s.shutdown(socket.SHUT_WR) if not body else None
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def text_doc(id_: str, text: str, owner: str = "alice", **extra) -> dict:
    return {"id": id_, "owner": owner, "modality": "text", "text": text, **extra}


def count(port: int) -> int:
    status, body = http_post(port, "/stats", [])
    assert status == 200
    return body["data"][0]["tags"]["total"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("integrity") / "workspace"
    with Server(workspace, free_port(), free_port(), *MODEL) as running:
        status, body = http_post(running.http_port, "/index", [
            text_doc("base-1", "a red square"), text_doc("base-2", "blue circles", owner="bob"),
            {"id": "base-img", "owner": "bob", "modality": "image", "uri": data_uri(png_bytes())}])
        assert status == 200 and [d["status"] for d in body["data"]] == ["indexed"] * 3
        yield running


def search(port: int, text: str, **parameters) -> dict:
    status, body = http_post(port, "/search", [{"id": "q", "text": text}], parameters)
    assert status == 200, body
    return body["data"][0]


# -- 1. clients cannot route; the indexer refuses embeddings no encoder made ----------------------
def test_http_client_routing_is_refused(server):
    before = count(server.http_port)
    status, body = post_json(server.http_port, "/index", {
        "header": {"target_executor": "indexer"},
        "data": [text_doc("routed", "spam", embedding=[1e30] * 32)]})
    assert status == 400 and "target_executor" in body["detail"] and body["field"] == "header.target_executor"
    assert count(server.http_port) == before


def test_grpc_routing_is_ignored_and_bogus_embeddings_never_rank(server):
    client = Client(host="127.0.0.1", port=server.grpc_port)
    docs = DocList[ContentDoc]([
        ContentDoc(id="grpc-routed", owner="mallory", modality="text", text="routed spam", embedding=np.full(32, 1e30)),
        ContentDoc(id="grpc-nopic", owner="mallory", modality="image", embedding=np.full(32, 1e30))])
    out = client.post("/index", docs, target_executor="indexer", return_type=DocList[ContentDoc])
    assert out[1].status == "error" and "blob/uri" in out[1].error
    top = search(server.http_port, "something else entirely", k=3, modalities=["text"])["text_matches"]
    assert top and all(m["score"] <= 1.0001 for m in top)


def test_tags_too_deep_are_refused_and_searches_keep_working(server):
    deep = leaf = {}
    for _ in range(31):
        leaf["x"] = {}
        leaf = leaf["x"]
    status, body = http_post(server.http_port, "/index", [text_doc(f"deep-{i}", "deep tags", tags=deep) for i in range(4)])
    assert status == 200 and all(d["status"] == "error" and d["error"].startswith("tags") for d in body["data"])
    assert search(server.http_port, "deep tags", k=10)["status"] == "ok"


def test_fields_only_the_service_sets_are_dropped_from_client_documents(server):
    """A client's ``error``, ``status``, ``feedback``, ``shard`` or matches never reach an
    executor, over HTTP or gRPC: a ``feedback`` of 0 or ``[[1, 2]]`` used to answer 500."""
    odd = {"error": "the client says so", "status": "deleted", "feedback": 0, "shard": 7,
           "text_matches": [{"id": "planted", "score": 9.0}]}
    for extra in (odd, {"feedback": [[1, 2]]}, {"feedback": False}):
        status, body = http_post(server.http_port, "/search", [{"id": "q", "text": "a red square", **extra}], {"k": 3})
        assert status == 200, body
        doc = body["data"][0]
        assert (doc["status"], doc["error"], doc["feedback"], doc["shard"]) == ("ok", None, None, None), doc
        assert doc["text_matches"] and "planted" not in [m["id"] for m in doc["text_matches"]]
    status, body = http_post(server.http_port, "/index", [text_doc("fields-http", "a green triangle", **odd)])
    assert status == 200 and body["data"][0]["status"] == "indexed", body
    client = Client(host="127.0.0.1", port=server.grpc_port)
    sent = DocList[ContentDoc]([ContentDoc(id="fields-grpc", owner="alice", modality="text", text="a green circle",
                                           error="the client says so", status="deleted", shard=7, feedback={"a": 1})])
    out = client.post("/index", sent, return_type=DocList[ContentDoc])
    assert (out[0].status, out[0].error, out[0].feedback, out[0].shard) == ("indexed", None, None, None)


def test_packed_grpc_documents_are_unpacked_and_filtered_too(server):
    """``docs_bytes`` (documents packed as one blob) went past the filter: a client's error
    mark stopped its own post and forged ``posts`` steered /refine. Unreadable bytes are a 4xx."""
    import grpc
    from jina.proto import jina_pb2, jina_pb2_grpc
    from jina.types.request.data import DataRequest

    stub = jina_pb2_grpc.JinaSingleDataRequestRPCStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))

    def packed(endpoint: str, blob: bytes) -> DataRequest:
        request = DataRequest()
        request.header.exec_endpoint = endpoint
        request.data.docs_bytes = blob
        answer = stub.process_single_data(request, timeout=60)
        answer.document_array_cls = DocList[ContentDoc]
        return answer

    docs = DocList[ContentDoc]([ContentDoc(id="packed-1", owner="alice", modality="text", text="a packed post",
                                           status="error", error="the client says no", shard=3)])
    answer = packed("/index", docs.to_bytes())
    assert answer.header.status.code != jina_pb2.StatusProto.ERROR, answer.header.status.description
    assert (answer.docs[0].status, answer.docs[0].error, answer.docs[0].shard) == ("indexed", None, None)
    garbage = packed("/search", b"\x00 not documents \xff")
    assert garbage.header.status.exception.name == "RequestError"
    assert "data.docs_bytes" in garbage.header.status.description


def test_grpc_requests_are_bounded_in_documents_like_http_bodies(server):
    """Over gRPC any number of documents reached the executors; now max_docs_per_request."""
    from jina.excepts import BadServer

    many = DocList[ContentDoc]([ContentDoc(id=f"many-{i}") for i in range(LIMITS.max_docs_per_request + 1)])
    with pytest.raises(BadServer, match="max_docs_per_request"):
        Client(host="127.0.0.1", port=server.grpc_port).post("/stats", many, request_size=len(many),
                                                             return_type=DocList[ContentDoc])
    assert count(server.http_port) >= 3  # still serving


def test_grpc_messages_are_bounded_in_bytes_like_http_bodies(server):
    """Jina lets a gRPC message be any size, and the gateway held each one whole."""
    from jina.excepts import BadServerFlow

    client = Client(host="127.0.0.1", port=server.grpc_port)
    huge = DocList[ContentDoc]([ContentDoc(id="huge-1", owner="alice", modality="image",
                                           blob=b"\xff" * (LIMITS.max_body_bytes + 1))])
    with pytest.raises(BadServerFlow, match="RESOURCE_EXHAUSTED"):
        client.post("/index", huge, return_type=DocList[ContentDoc])
    # under the message limit, an image over max_image_bytes is still its document's error
    large = DocList[ContentDoc]([ContentDoc(id="large-1", owner="alice", modality="image",
                                            blob=b"\xff" * (LIMITS.max_image_bytes + 1)),
                                 ContentDoc(id="large-2", owner="alice", modality="text", text="a sibling")])
    answer = client.post("/index", large, return_type=DocList[ContentDoc])
    assert [(d.id, d.status) for d in answer] == [("large-1", "error"), ("large-2", "indexed")]
    assert "max_bytes" in answer[0].error
    assert count(server.http_port) >= 3  # still serving


def test_per_request_endpoints_are_never_cut_into_chunks(server):
    """Bodies travel in chunks of chunk_docs: /stats answered one stats document per chunk,
    and /recommend refused 70 documents as "got 64"."""
    many = [{"id": f"r{i}"} for i in range(LIMITS.chunk_docs + 6)]
    status, body = http_post(server.http_port, "/recommend", many, {"username": "alice"})
    assert status == 422 and f"got {len(many)}" in body["detail"] and body["field"] == "data", body
    status, body = http_post(server.http_port, "/stats", many)
    assert status == 200 and len(body["data"]) == 1 and body["data"][0]["tags"]["total"] >= 3


def test_delete_names_an_empty_or_missing_id_instead_of_answering_not_found(server):
    """DocArray gives a document without ``id`` a random one: /delete answered ``not_found``."""
    http_post(server.http_port, "/index", [text_doc("del-kept", "a sibling that goes")])
    status, body = http_post(server.http_port, "/delete", [{"id": ""}, {"id": "never-indexed"}, {"owner": "alice"},
                                                           {"id": "del-kept"}])
    assert status == 200, body
    assert [(d["status"], (d.get("error") or "")[:12]) for d in body["data"]] == [
        ("error", "id: required"), ("not_found", ""), ("error", "id: required"), ("deleted", "")]
    assert body["data"][2]["id"] is None  # not the random id DocArray made up
    status, body = http_post(server.http_port, "/delete", {"owner": "alice"})
    assert status == 422 and body["field"] == "data.id" and "id: required" in body["detail"], body


def test_string_fields_of_another_json_type_fail_their_document_and_nothing_else(server):
    """pydantic turned ``{"id": 7}`` into the id "7": a /delete removed the item "7". A list id
    failed the whole request, the valid sibling with it."""
    http_post(server.http_port, "/index", [text_doc("7", "seven"), text_doc("True", "truth"), text_doc("typed-x", "x")])
    status, body = http_post(server.http_port, "/delete", [{"id": 7}, {"id": ["typed-x"]}, {"id": True},
                                                           {"id": {"a": 1}}, {"id": "typed-x"}])
    assert status == 200, body
    assert [(d["status"], d.get("error")) for d in body["data"]] == [
        ("error", "id: str type expected"), ("error", "id: str type expected"),
        ("error", "id: str type expected"), ("error", "id: str type expected"),
        ("deleted", None)]
    status, body = http_post(server.http_port, "/index", [{"id": "typed-t", "owner": "alice", "text": 123}])
    assert status == 200 and body["data"][0]["error"] == "text: str type expected", body
    for lone, field in (({"id": 7}, "data.id"), ({"id": None}, "data.id"), ({"id": "a", "owner": 5}, "data.owner")):
        status, body = http_post(server.http_port, "/delete", lone)
        assert status == 422 and body["field"] == field, (lone, body)
    status, body = http_post(server.http_port, "/search", [{"id": "q", "text": "seven"}], {"k": 50})
    assert {"7", "True"} <= {m["id"] for m in body["data"][0]["text_matches"]}  # neither was deleted


def test_a_listed_document_is_never_read_as_a_pair_of_its_keys(server):
    """pydantic read a one-item list that failed validation as ONE document built from pairs:
    ``[{"id": "t7", "status": []}]`` became ``{"id": "status"}`` and /delete removed "status"."""
    http_post(server.http_port, "/index", [text_doc("status", "the victim"), text_doc("pairs-t7", "the target")])
    status, body = http_post(server.http_port, "/delete", [{"id": "pairs-t7", "status": []}])
    assert status == 200 and [(d["id"], d["status"]) for d in body["data"]] == [("pairs-t7", "deleted")]
    status, body = http_post(server.http_port, "/delete", [{"id": "status", "text": []}])
    assert status == 200 and body["data"][0]["status"] == "error" and body["data"][0]["error"].startswith("text:")
    status, body = post_json(server.http_port, "/search", {"data": ["ab"]})
    assert status == 422 and body["field"] == "data[0]", body
    status, body = http_post(server.http_port, "/items", [{"id": "status"}])
    assert body["data"][0]["status"] == "ok"  # the victim is still there


def test_a_field_of_the_wrong_type_fails_its_document_alone(server):
    """Type errors answered 422 for the whole request; now only the document is refused."""
    status, body = http_post(server.http_port, "/index", [
        text_doc("typed-1", "a fine post"), {"id": "typed-2", "owner": "alice", "modality": "text", "text": ["no"]},
        text_doc("typed-3", "another fine post", tags=5), text_doc("typed-4", "the last fine post")])
    assert status == 200, body
    assert [(d["id"], d["status"]) for d in body["data"]] == [
        ("typed-1", "indexed"), ("typed-2", "error"), ("typed-3", "error"), ("typed-4", "indexed")]
    assert body["data"][1]["error"] == "text: str type expected"
    assert body["data"][2]["error"] == "tags: value is not a valid dict"
    status, body = post_json(server.http_port, "/index", {"data": {"id": "typed-5", "text": ["no"]}})
    assert status == 422 and body["field"] == "data.text", body  # one document: nothing else to answer


def test_a_tag_key_that_is_not_unicode_fails_its_document_alone(server):
    """The error named the key as it was, a lone surrogate, so the error itself could not be
    sent: the whole request answered 500 and its valid sibling was lost."""
    status, body = http_post(server.http_port, "/index", [text_doc("surrogate-ok", "a fine post"),
                                                          text_doc("surrogate-bad", "x", tags={"a": {"\udc00": 1}})])
    assert status == 200, body
    assert [d["status"] for d in body["data"]] == ["indexed", "error"]
    assert body["data"][1]["error"].startswith("tags.a.\\udc00 (key): not valid Unicode"), body["data"][1]


# -- 2. duplicate ids in one request ------------------------------------------------------------
def test_duplicate_ids_in_one_request_leave_one_vector_and_one_row(server):
    before = count(server.http_port)
    status, body = http_post(server.http_port, "/index", [
        text_doc("twice", "seven purple hexagons", owner="first"),
        text_doc("twice", "seven purple hexagons", owner="second")])
    assert status == 200 and body["data"][1]["status"] == "indexed"
    assert body["data"][0]["status"] == "error" and "again later" in body["data"][0]["error"]
    assert count(server.http_port) == before + 1
    [match] = search(server.http_port, "seven purple hexagons", k=1, username="base-owner-none")["text_matches"]
    assert (match["id"], match["owner"]) == ("twice", "second")


# -- 3. more than 100 documents: answered whole --------------------------------------------------
def test_more_than_100_documents_are_all_answered(server):
    status, body = http_post(server.http_port, "/search", [{"id": f"q{i}", "text": f"query {i}"} for i in range(150)],
                             {"k": 1})
    assert status == 200 and [d["id"] for d in body["data"]] == [f"q{i}" for i in range(150)]
    assert all(d["status"] == "ok" for d in body["data"])
    status, body = http_post(server.http_port, "/index", [text_doc(f"many-{i}", f"text {i}") for i in range(250)])
    assert status == 200 and [d["status"] for d in body["data"]] == ["indexed"] * 250
    total = count(server.http_port)
    status, body = http_post(server.http_port, "/delete", [{"id": f"many-{i}"} for i in range(250)])
    assert status == 200 and [d["status"] for d in body["data"]] == ["deleted"] * 250
    assert count(server.http_port) == total - 250  # nothing is written after the answer


# -- 4. one bad document does not sink its siblings ----------------------------------------------
def test_one_bad_document_names_its_field_and_siblings_are_stored(server):
    bad = [
        ("uri", {"id": "bad-nul", "owner": "eve", "modality": "image", "uri": "/tmp/x\x00.png"}),
        ("id", text_doc("bad-\ud800", "lone surrogate id")),
        ("owner", text_doc("bad-owner", "x", owner="ev\ud800e")),
        ("text", text_doc("bad-text", "x \ud800")),
        ("uri", {"id": "bad-uri", "owner": "eve", "modality": "image", "uri": "data:\udfff"}),
        ("tags", text_doc("bad-tags", "x", tags={"k": "\ud800"})),
        ("embedding", text_doc("bad-emb", "wrong shape", embedding=[0.5, 0.5])),
    ]
    good = [text_doc("good-1", "sibling one"), text_doc("good-2", "sibling two")]
    status, body = http_post(server.http_port, "/index", [good[0], *[doc for _, doc in bad], good[1]])
    assert status == 200, body
    out = body["data"]
    assert out[0]["status"] == "indexed" and out[-1]["status"] == "indexed"
    for (field, _), doc in zip(bad[:-1], out[1:-2]):
        assert doc["status"] == "error" and doc["error"].startswith(field), doc
    assert out[-2]["status"] == "indexed"  # a client embedding is replaced by the encoder's
    found = search(server.http_port, "sibling one", k=5, modalities=["text"])["text_matches"]
    assert "good-1" in [m["id"] for m in found]


def test_search_with_nul_in_uri_is_a_document_error(server):
    status, body = http_post(server.http_port, "/search", [{"id": "q", "uri": "/etc/passwd\x00.png"},
                                                           {"id": "q2", "text": "a red square"}])
    assert status == 200 and body["data"][0]["status"] == "error" and body["data"][0]["error"].startswith("uri")
    assert body["data"][1]["status"] == "ok"


# -- 7. limits enforced before parsing; nothing echoed ---------------------------------------------
def test_too_many_documents_refused_up_front(server):
    status, body = http_post(server.http_port, "/index", [{}] * (LIMITS.max_docs_per_request + 1))
    assert status == 413 and body["limit"] == "max_docs_per_request"
    assert len(json.dumps(body)) < 1000


def test_refusals_reach_a_page_on_another_origin(server):
    """The guard answers before Jina's CORS layer; without the header a browser on another
    origin would see a network error instead of the 413 and its reason."""
    import urllib.error
    import urllib.request

    body = json.dumps({"data": [{}] * (LIMITS.max_docs_per_request + 1)}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}/index", data=body, headers={
        "Content-Type": "application/json", "Origin": "http://elsewhere.example"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413 and refused.value.headers["access-control-allow-origin"] == "*"


def test_oversized_body_refused_without_reading_it(server):
    size = LIMITS.max_body_bytes + 1
    status, body = raw_http(server.http_port, f"POST /index HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                              f"\r\nContent-Length: {size}\r\nConnection: close")
    assert status == 413 and json.loads(body)["limit"] == "max_body_bytes"


def test_huge_tags_rejected_quickly_and_not_echoed(server):
    tags = {str(i): i for i in range(200_000)}
    status, body = http_post(server.http_port, "/index", [text_doc("huge-tags", "x", tags=tags)])
    assert status == 200 and body["data"][0]["error"].startswith("tags")
    assert len(json.dumps(body)) < 10_000


# -- 14: client errors are 4xx naming the parameter; 8: /ui/%00 -----------------------------------
@pytest.mark.parametrize("endpoint, parameters, field", [
    ("/search", {"k": 0}, "k"), ("/search", {"k": "ten"}, "k"), ("/search", {"modalities": ["audio"]}, "modalities"),
    ("/recommend", {}, "username"), ("/recommend", {"username": "a", "max_seeds": 100}, "max_seeds"),
])
def test_bad_parameters_answer_422_naming_the_parameter(server, endpoint, parameters, field):
    data = [{"id": "q", "text": "a red square"}] if endpoint == "/search" else [{}]
    status, body = http_post(server.http_port, endpoint, data, parameters)
    assert status == 422 and body["field"] == field and f"'{field}'" in body["detail"]
    assert search(server.http_port, "a red square")["status"] == "ok"


def test_unusable_body_is_422(server):
    status, _ = raw_http(server.http_port, "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                           "Content-Length: 9\r\nConnection: close", b"{not json")
    assert status == 422


def test_ui_path_with_nul_is_not_a_server_error(server):
    status, _ = raw_http(server.http_port, "GET /ui/%00 HTTP/1.1\r\nHost: x\r\nConnection: close")
    assert 400 <= status < 500


# -- 8. an unreachable executor is a 503 naming it -------------------------------------------------
def test_unreachable_executor_is_503_naming_it(tmp_path):
    workspace = tmp_path / "workspace"
    with Server(workspace, free_port(), free_port(), *MODEL) as running:
        indexer_pid = int((workspace / "store.lock").read_text())  # the lock holder writes its pid
        os.kill(indexer_pid, 9)
        status, body = http_post(running.http_port, "/search", [{"id": "q", "text": "anything"}], timeout=120)
        assert status == 503 and body["executor"] == "indexer" and "indexer" in body["detail"]
        with pytest.raises(Exception, match="indexer"):
            Client(host="127.0.0.1", port=running.grpc_port).post(
                "/search", DocList[ContentDoc]([ContentDoc(id="q", text="anything")]), return_type=DocList[ContentDoc])


# -- 6. a stop signal mid-request stops everything and frees the ports ----------------------------
def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _port_free(port: int) -> bool:
    """Bindable as a server binds it (SO_REUSEADDR: closed connections may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return True
        except OSError:
            return False


@pytest.fixture(scope="module")
def heavy_workspace(tmp_path_factory) -> Path:
    """A workspace where 'heavy' posted 10,000 texts in 40 interests, among 20,000 posts of others.

    Written through ContentIndex directly (random unit vectors of the tiny model's size):
    encoding 30,000 texts through the Flow would only make the test slow.
    """
    from crossmodal.index.content import ContentIndex, IndexConfig
    from crossmodal.index.store import Item
    from crossmodal.model.resolve import embed_dim, resolve

    spec = resolve(TINY_MODEL, "none")
    dim = embed_dim(spec)
    rng = np.random.default_rng(0)
    centres = unit_rows(40, dim, seed=1)
    def around(n: int) -> np.ndarray:
        x = centres[rng.integers(0, len(centres), n)] + 0.15 * rng.normal(size=(n, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    workspace = tmp_path_factory.mktemp("heavy") / "workspace"
    index = ContentIndex(IndexConfig(workspace, spec.label, dim))
    own, others = around(10_000), around(20_000)
    for start in range(0, 10_000, 2_000):
        index.upsert([Item(f"heavy-{i}", "heavy", "text", own[i], text=f"post {i}") for i in range(start, start + 2_000)])
    for start in range(0, 20_000, 5_000):
        index.upsert([Item(f"other-{i}", f"user{i % 500}", "text", others[i], text=f"other {i}")
                      for i in range(start, start + 5_000)])
    index.close()
    return workspace


HEAVY = {"username": "heavy", "k": 1000, "max_seeds": LIMITS.max_recommend_seeds, "min_cluster_size": 2,
         "min_samples": 1, "with_thumbnails": True}


def _copy(workspace: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(workspace, to / "workspace", ignore=shutil.ignore_patterns("store.lock")))


def _kib(pid: int, field: str) -> int:
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1])


# -- 5. /recommend for a 10,000-post user is bounded -----------------------------------------------
def test_recommend_for_a_long_history_is_bounded_in_memory(heavy_workspace, tmp_path):
    workspace = _copy(heavy_workspace, tmp_path)
    with Server(workspace, free_port(), free_port(), *MODEL) as running:
        indexer = int((workspace / "store.lock").read_text())
        http_post(running.http_port, "/search", [{"id": "warm", "text": "warm up"}], {"k": 5})
        before = _kib(indexer, "VmRSS")
        Path(f"/proc/{indexer}/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
        started = time.time()
        status, body = http_post(running.http_port, "/recommend", [{}], HEAVY, timeout=300)
        seconds = time.time() - started
        growth_mb = (_kib(indexer, "VmHWM") - before) / 1024
        print(f"recommend, 10,000-post user: {seconds:.1f} s, indexer peak RSS growth {growth_mb:.0f} MB")
        assert status == 200, body
        matches = body["data"][0]["from_text"]["text_matches"]
        assert 0 < len(matches) <= HEAVY["k"] and all(m["owner"] != "heavy" for m in matches)
        assert growth_mb < 200


# -- 6. a stop signal mid-request stops every process and frees the ports -------------------------
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stop_signal_mid_request_stops_every_process(heavy_workspace, tmp_path, how):
    import signal

    running = Server(_copy(heavy_workspace, tmp_path), free_port(), free_port(), *MODEL).start()
    try:
        processes = [running.proc.pid, *descendants(running.proc.pid)]
        assert len(processes) >= 5  # app.py, the gateway and four executors (at least)
        stop = threading.Event()

        def busy():  # heavy requests back to back, so one is always running
            while not stop.is_set():
                try:
                    http_post(running.http_port, "/recommend", [{}], HEAVY, timeout=300)
                except Exception:  # the service goes away under it: that is the point
                    return

        threading.Thread(target=busy, daemon=True).start()
        time.sleep(2)
        if how == "ctrl-c":
            os.killpg(running.proc.pid, signal.SIGINT)  # a terminal sends it to the whole group
        else:
            running.proc.send_signal(signal.SIGTERM)  # docker stop, systemd: the main process only
        start = time.time()
        while any(_alive(p) for p in processes) and time.time() - start < 15:
            time.sleep(0.2)
        stop.set()
        left = [p for p in processes if _alive(p)]
        print(f"{how}: every process gone {time.time() - start:.1f} s after the signal")
        assert not left, f"still running 15 s after the signal: {left}"
        assert _port_free(running.http_port) and _port_free(running.grpc_port)
    finally:
        running.stop()
