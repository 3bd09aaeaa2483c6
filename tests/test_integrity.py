"""Issue 15, library level: what the indexer stores can always be returned, and FAISS
never holds a vector without its row. (End-to-end checks: tests/test_integrity_e2e.py.)"""
import copy
import os

import numpy as np
import pytest
from docarray import DocList

from crossmodal.api import convert
from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import content_error, embedding_error, query_error, tags_error
from crossmodal.index.content import ContentIndex, IndexConfig, Match
from crossmodal.index.store import Item, Row
from crossmodal.settings import LIMITS
from tests.harness import unit_rows

DIM = 16


def _deep(levels: int) -> dict:
    tags = leaf = {}
    for _ in range(levels):
        leaf["x"] = {}
        leaf = leaf["x"]
    return tags


# -- finding 1: client-made embeddings, tags that break responses ----------------------------
@pytest.mark.parametrize("embedding, reason", [
    (np.full(DIM, 1e30, np.float32), "norm"),
    (np.full(DIM, np.nan, np.float32), "NaN"),
    (np.ones(DIM + 1, np.float32) / np.sqrt(DIM + 1), "shape"),
    (np.ones(DIM, np.float32), "norm"),
    (None, "missing"),
])
def test_indexer_refuses_embeddings_no_encoder_makes(embedding, reason):
    error = embedding_error(embedding, DIM)
    assert error.startswith("embedding:") and reason in error


def test_unit_embedding_is_accepted():
    assert embedding_error(unit_rows(1, DIM)[0], DIM) is None


def test_tags_limits_depth_keys_bytes():
    assert tags_error({"lang": "en", "n": [1, 2, {"a": None}]}) is None
    assert "max_tags_depth" in tags_error(_deep(31))
    assert "max_tags_keys" in tags_error({str(i): i for i in range(LIMITS.max_tags_keys + 1)})
    assert "max_tags_bytes" in tags_error({"a": "x" * LIMITS.max_tags_bytes})
    assert "JSON number" in tags_error({"a": float("nan")})


def test_response_building_never_fails_on_a_stored_row():
    """Rows stored before validation (deep tags, lone surrogates, NUL) still make a response."""
    row = Row(7, "id\ud800", "own\x00er", "text", "bad \udfff text", None, _deep(40), 0.0)
    match = convert.match_doc(Match(row, 0.5))
    docs = DocList[ContentDoc]([ContentDoc(id="q", text_matches=[match])])
    back = DocList[ContentDoc].from_protobuf(docs.to_protobuf())
    [found] = back[0].text_matches
    assert "invalid_tags" in found.tags and found.text.startswith("bad ")
    assert found.model_dump_json() if hasattr(found, "model_dump_json") else found.json()


# -- finding 4: one bad document names its field ------------------------------------------------
@pytest.mark.parametrize("fields, name", [
    ({"uri": "/tmp/a\x00.png", "modality": "image"}, "uri"),
    ({"id": "x\ud800"}, "id"),
    ({"owner": "al\ud800ice"}, "owner"),
    ({"text": "hi \ud800"}, "text"),
    ({"uri": "data:\ud800", "modality": "image"}, "uri"),
    ({"tags": {"k": "\ud800"}}, "tags.k"),
    ({"tags": {"\ud800": 1}}, "tags."),
    ({"tags": _deep(32)}, "tags"),
])
def test_bad_strings_and_tags_name_the_field(fields, name):
    doc = ContentDoc(**{"id": "ok", "owner": "alice", "modality": "text", "text": "fine", **fields})
    error = content_error(doc)
    assert error is not None and error.startswith(name), error


def test_query_with_nul_in_uri_is_a_document_error():
    assert query_error(ContentDoc(id="q", uri="/etc/x\x00")).startswith("uri:")


# -- finding 2: duplicate ids, and FAISS checked against the store on start --------------------
def _index(tmp_path) -> ContentIndex:
    return ContentIndex(IndexConfig(tmp_path, "test-model", DIM, "Flat"))


def test_duplicate_ids_last_wins_one_vector_one_row(tmp_path):
    index = _index(tmp_path)
    vectors = unit_rows(3, DIM, seed=1)
    statuses = index.upsert([Item("same", "alice", "text", vectors[0]), Item("other", "bob", "text", vectors[1]),
                             Item("same", "carol", "text", vectors[2])])
    assert statuses == ["duplicate", "indexed", "indexed"]
    assert index.store.count("text") == 2 and index.vectors["text"].index.ntotal == 2
    [[top]] = index.search(vectors[2:3], "text", 1)
    assert top.row.id == "same" and top.row.owner == "carol"
    [[first]] = index.search(vectors[0:1], "text", 1, exclude_owner="bob")
    assert first.row.id == "same"  # the first copy's vector is gone, yet k=1 still finds a match
    index.close()


def test_many_copies_then_delete_leave_nothing(tmp_path):
    index = _index(tmp_path)
    vectors = unit_rows(500, DIM, seed=2)
    index.upsert([Item("dup", "alice", "text", v) for v in vectors])
    assert index.delete(["dup"]) == ["deleted"]
    assert index.vectors["text"].index.ntotal == 0
    assert index.search(vectors[:1], "text", 100) == [[]]
    index.close()


def test_saved_index_that_disagrees_with_the_store_is_rebuilt(tmp_path):
    index = _index(tmp_path)
    vectors = unit_rows(4, DIM, seed=3)
    index.upsert([Item(f"t{i}", "alice", "text", v) for i, v in enumerate(vectors)])
    orphan = int(index.store.vids("text")[0])
    index.store._db.execute("DELETE FROM items WHERE vid=?", (orphan,))  # row gone, generation unchanged
    index.close()
    reopened = _index(tmp_path)
    assert reopened.vectors["text"].live_vids().tolist() == reopened.store.vids("text").tolist()
    assert orphan not in reopened.vectors["text"].live_vids()
    reopened.close()


# -- finding 6: a stop that hangs (an executor stuck in a request) is cut short ------------------
STUCK = """
import os, signal, sys, time
from crossmodal.serve.shutdown import hard_stop_after
child = os.fork()
if child == 0:  # an executor stuck in a long request, deaf to the stop signals
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(1)
print(child, flush=True)
hard_stop_after(1.0)
time.sleep(600)  # Flow.close waiting on it forever
"""


def test_hard_stop_kills_a_stuck_process_tree():
    import subprocess
    import sys
    import time
    from pathlib import Path

    from crossmodal.settings import ROOT

    proc = subprocess.Popen([sys.executable, "-c", STUCK], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        assert proc.wait(30) == 0
        deadline = time.time() + 10
        while Path(f"/proc/{child}").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]
    finally:
        for pid in (child, proc.pid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


# -- finding 5/7: thumbnails are capped per response -----------------------------------------------
def test_thumbnails_are_capped_per_response(tmp_path):
    index = _index(tmp_path)
    vectors = unit_rows(5, DIM, seed=4)
    index.upsert([Item(f"img{i}", "alice", "image", v, thumbnail=f"data:image/jpeg;base64,{i}")
                  for i, v in enumerate(vectors)])
    [matches] = index.search(vectors[:1], "image", 5)
    assert len(index.thumbnails(matches)) == 5
    assert set(index.thumbnails(matches, limit=2)) == {m.row.vid for m in matches[:2]}
    index.close()


def test_gateway_refuses_per_document_what_protobuf_cannot_carry():
    """A number beyond protobuf's range in tags fails that document, not the request (fuzz finding)."""
    from crossmodal.api.schemas import ContentDoc
    from crossmodal.serve.gateway import _document_errors

    docs = [ContentDoc(id="ok", owner="a", modality="text", text="fine", tags={"n": 1}),
            ContentDoc(id="huge", owner="a", modality="text", text="x", tags={"n": 2**70}),
            ContentDoc(id="forged", owner="a", modality="text", text="y", embedding=[1.0, 2.0])]
    errors = _document_errors(docs, ContentDoc)
    assert list(errors) == [1] and errors[1].error.startswith("tags: cannot be carried")
    assert docs[2].embedding is None  # only the encoders make embeddings


def _answer_docs(case: str) -> DocList[ContentDoc]:
    from crossmodal.api.schemas import MatchDoc, MatchGroup, SeedDoc

    if case == "mixed, with an array":  # an embedding: only docarray renders arrays
        return DocList[ContentDoc]([
            ContentDoc(id="q", text="a query", status="ok", image_matches=[
                MatchDoc(id="m1", owner="o", modality="image", score=0.5, thumbnail="data:image/jpeg;base64,AA=="),
                MatchDoc(id="m2", owner="o", modality="image", score=0.25, tags={"n": 1, "x": [1, "a", None]})]),
            ContentDoc(id="e", status="error", error="text: too long", tags={"nested": {"deep": True}}),
            ContentDoc(id="r", status="ok", from_text=MatchGroup(text_matches=[MatchDoc(id="m3", score=0.1, seed="s")]),
                       seeds=[SeedDoc(key="s", post_id="p", member_ids=["p", "q"], embedding=np.ones(3, np.float32))])])
    if case == "search and recommend answers":  # what the executors send: rendered from protobuf
        matches = [MatchDoc(id=f"m{i}", owner="o", modality="text", score=1 / (i + 1), text="t", cluster=-1,
                            tags={"created_at": 1.5, "n": i, "ok": True, "none": None, "l": [1, {"a": "b"}]})
                   for i in range(3)]
        return DocList[ContentDoc]([
            ContentDoc(id="q", text="a query", text_matches=matches, image_matches=[]),
            ContentDoc(id="r", status="ok", from_image=MatchGroup(), from_text=MatchGroup(text_matches=matches[:1]),
                       seeds=[SeedDoc(key="s", member_ids=["p", "q"], share=2)], feedback={"method": "rocchio"})])
    if case == "stored content, bytes and arrays":  # what travels between executors
        from crossmodal.api.schemas import Posts

        return DocList[ContentDoc]([ContentDoc(
            id="c", owner="o", modality="image", blob=b"\x00\xff", embedding=np.ones(4, np.float32), shard=2,
            tags={"a": 1}, posts=Posts(ids=["a"], modalities=["text"], embeddings=np.zeros((1, 4), np.float32)),
            candidates=[MatchDoc(id="m", embedding=np.ones(4, np.float32), seed_index=0)])])
    return _answer_docs("search and recommend answers")


@pytest.mark.parametrize("case", ["mixed, with an array", "search and recommend answers",
                                  "stored content, bytes and arrays"])
def test_documents_are_written_to_protobuf_as_docarray_writes_them(case, monkeypatch):
    """crossmodal.api.wire writes the executors' answers in place: the bytes must stay docarray's."""
    from crossmodal.api.wire import WireDoc

    docs = _answer_docs(case)
    ours = docs.to_protobuf()
    monkeypatch.delattr(WireDoc, "to_protobuf")  # docarray's own, for every nested document too
    theirs = docs.to_protobuf()
    assert ours.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
    assert ours == theirs


@pytest.mark.parametrize("model", ["ContentDoc", "Jina's gateway model"])
@pytest.mark.parametrize("case, from_protobuf", [("mixed, with an array", False),
                                                 ("search and recommend answers", True),
                                                 ("an int in a float field", False)])
def test_http_answer_is_the_body_fastapi_would_have_built(case, from_protobuf, model):
    """The gateway renders Jina's HTTP answer itself (render.json_answer), from the protobuf where
    it can; the body must equal the one FastAPI builds from ``to_dict()`` through the endpoint's
    output model, which it skips. That model is the one Jina's gateway rebuilds from the
    executors' JSON schema (its fields in another order, ``tags`` typed ``Any``)."""
    from typing import Dict, List, Optional

    import pydantic
    from docarray import BaseDoc
    from docarray.base_doc.docarray_response import DocArrayResponse
    from fastapi.encoders import jsonable_encoder
    from jina.types.request.data import DataRequest

    from crossmodal.serve.render import json_answer

    class Header(pydantic.BaseModel):  # Jina's HTTP header model (camelCase aliases)
        request_id: Optional[str] = pydantic.Field(alias="requestId")
        target_executor: Optional[str] = pydantic.Field(default=None, alias="targetExecutor")

        class Config:
            allow_population_by_field_name = True

    from jina.serve.runtimes.helper import _create_pydantic_model_from_schema

    doc_type = ContentDoc if model == "ContentDoc" else _create_pydantic_model_from_schema(
        copy.deepcopy(ContentDoc.schema()), "ContentDoc", {})  # it edits the schema it reads
    output = pydantic.create_model("out", data=(List[doc_type], ...), parameters=(Optional[Dict], None),
                                   header=(Optional[Header], None), __config__=BaseDoc.__config__)
    request = DataRequest()
    request.document_array_cls = DocList[ContentDoc]
    request.data.docs = _answer_docs(case)
    request.parameters = {"k": 5, "username": "alice"}
    request.header.request_id = "abc"
    wire = request.proto.SerializeToString()
    if case == "an int in a float field":  # as a client's protobuf could say it: docarray makes it 1.0
        from jina.proto import jina_pb2

        proto = jina_pb2.DataRequestProto.FromString(wire)
        proto.data.docs.docs[0].data["text_matches"].doc_array.docs[0].data["score"].integer = 1
        wire = proto.SerializeToString()
    for target in (None, ""):  # Jina's gateway sets "" on the requests it forwards
        answered = DataRequest(wire)  # documents as they come back from an executor
        answered.document_array_cls = DocList[doc_type]
        if target is not None:
            answered.header.target_executor = target
        body = json_answer(answered, doc_type=doc_type).body
        assert (answered.data._loaded_doc_array is None) == from_protobuf  # parsed only where it must be
        fastapi_body = jsonable_encoder(output.parse_obj(answered.to_dict()), by_alias=True)
        assert body == DocArrayResponse(fastapi_body).body  # key order included
        assert json_answer(answered).body == body  # and the same from parsed documents
    assert fastapi_body["header"]["requestId"] == "abc" and fastapi_body["data"][0]["id"] == "q"
