"""Users and tokens end to end: app.py -t adduser, then a server with --auth, over HTTP and gRPC.

Every endpoint is called without a token, with a wrong one, with another user's and
with an admin's. One server for the module; each test uses ids of its own.
"""
import time

import pytest
from docarray import DocList
from jina import Client

from crossmodal.api.schemas import ContentDoc
from crossmodal.settings import AUTH
from tests.harness import TINY_MODEL, Server, data_uri, free_port, http_post, png_bytes, run_app

MODEL = ["--model", TINY_MODEL, "--pretrained", "none"]
ENDPOINTS = ["/index", "/search", "/delete", "/stats", "/recommend"]
WRONG = "cm_0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
BASE = [
    ContentDoc(id="alice-text", owner="alice", modality="text", text="a red square"),
    ContentDoc(id="alice-img", owner="alice", modality="image", blob=png_bytes((200, 10, 10))),
    ContentDoc(id="bob-text", owner="bob", modality="text", text="blue circles everywhere"),
    ContentDoc(id="bob-img", owner="bob", modality="image", blob=png_bytes((10, 10, 200), shape="circle")),
]


def add_user(workspace, name, *extra) -> str:
    done = run_app("-t", "adduser", name, *extra, "--workspace", str(workspace))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("auth") / "workspace"
    tokens = {name: add_user(workspace, name) for name in ("alice", "bob")}
    tokens["root"] = add_user(workspace, "root", "--admin")
    again = run_app("-t", "adduser", "alice", "--workspace", str(workspace))
    server = Server(workspace, free_port(), free_port(), *MODEL, "--auth", token=tokens["root"])
    server.start()
    try:
        grpc = Client(host="127.0.0.1", port=server.grpc_port)
        indexed = grpc.post("/index", DocList[ContentDoc](BASE), return_type=DocList[ContentDoc],
                            metadata=(("authorization", f"Bearer {tokens['root']}"),))
        assert [d.status for d in indexed] == ["indexed"] * len(BASE)
        yield {"server": server, "tokens": tokens, "grpc": grpc, "http": server.http_port, "again": again,
               "workspace": workspace}
    finally:
        server.stop()


def http(service, endpoint, docs, user=None, token=None, **parameters):
    token = token or (service["tokens"][user] if user else None)
    return http_post(service["http"], endpoint, docs, parameters, token=token)


def grpc(service, endpoint, docs, user=None, token=None, **parameters):
    token = token or (service["tokens"][user] if user else None)
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return service["grpc"].post(endpoint, DocList[ContentDoc](docs), parameters=parameters,
                                return_type=DocList[ContentDoc], metadata=metadata)


def total(service) -> int:
    status, body = http(service, "/stats", [], "root")
    assert status == 200
    return body["data"][0]["tags"]["total"]


def all_ids(service) -> set:
    """Every stored id, through an admin search (admins exclude nobody)."""
    status, body = http(service, "/search", [{"id": "q", "text": "anything"}], "root", k=1000)
    assert status == 200
    [doc] = body["data"]
    return {m["id"] for m in doc["text_matches"] + doc["image_matches"]}


def test_adduser_prints_a_token_once_and_refuses_a_duplicate(service):
    assert all(t.startswith("cm_") for t in service["tokens"].values())
    assert service["again"].returncode == 2 and "already exists" in service["again"].stderr


def test_an_open_grpc_stream_stops_when_its_token_is_rotated(service):
    """The token was checked once per gRPC call: a stream opened before -t newtoken went on
    posting as its user for as long as the client kept it open."""
    workspace = service["workspace"]
    token = add_user(workspace, "fiona")

    def posts():
        yield ContentDoc(id="fiona-1", owner="fiona", modality="text", text="before")
        rotated = run_app("-t", "newtoken", "fiona", "--workspace", str(workspace))
        assert rotated.returncode == 0, rotated.stderr
        for i in range(2, 8):  # a client that keeps sending saw INTERNAL, not why
            time.sleep(0.3)
            yield ContentDoc(id=f"fiona-{i}", owner="fiona", modality="text", text="after")

    with pytest.raises(Exception, match="UNAUTHENTICATED") as refused:
        service["grpc"].post("/index", posts(), request_size=1, return_type=DocList[ContentDoc],
                             metadata=(("authorization", f"Bearer {token}"),))
    assert "INTERNAL" not in str(refused.value)
    status, body = http(service, "/items", [{"id": f"fiona-{i}"} for i in range(1, 8)], "root")
    assert status == 200 and [d["status"] for d in body["data"]][0] == "ok"
    assert [d["status"] for d in body["data"]][1:] == ["not_found"] * 6  # sent after the rotation


def request_for(endpoint):
    return {"/index": [{"id": "intruder", "owner": "alice", "modality": "text", "text": "x"}],
            "/search": [{"id": "q", "text": "red"}], "/delete": [{"id": "alice-text"}],
            "/stats": [], "/recommend": [{}]}[endpoint]


def test_newtoken_and_deluser_take_effect_in_the_running_service_at_once(service):
    workspace = service["workspace"]
    old = add_user(workspace, "erin")
    assert http(service, "/stats", [], token=old)[0] == 200  # verified: the gateway remembers it
    rotated = run_app("-t", "newtoken", "erin", "--workspace", str(workspace))
    assert rotated.returncode == 0 and "the old one no longer works" in rotated.stdout, rotated.stderr
    new = rotated.stdout.strip().splitlines()[-1]
    assert new.startswith("cm_") and new != old
    assert http(service, "/stats", [], token=old)[0] == 401
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        grpc(service, "/stats", [], token=old)
    status, body = http(service, "/index", [{"id": "erin-1", "owner": "erin", "modality": "text", "text": "hi"}],
                        token=new)
    assert status == 200 and body["data"][0]["status"] == "indexed"
    removed = run_app("-t", "deluser", "erin", "--workspace", str(workspace))
    assert removed.returncode == 0 and "removed" in removed.stdout, removed.stderr
    assert http(service, "/stats", [], token=new)[0] == 401
    status, body = http(service, "/items", [{"id": "erin-1"}], "root")
    assert status == 200 and (body["data"][0]["status"], body["data"][0]["text"]) == ("ok", "hi")  # erin's post stays
    again = run_app("-t", "deluser", "erin", "--workspace", str(workspace))
    assert again.returncode == 2 and "'erin' does not exist" in again.stderr


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_http_without_or_with_a_wrong_token_is_401_and_changes_nothing(service, endpoint):
    before = total(service)
    answers = [http(service, endpoint, request_for(endpoint), username="alice"),
               http(service, endpoint, request_for(endpoint), token=WRONG, username="alice"),
               http(service, endpoint, request_for(endpoint), token="not-even-a-token", username="alice")]
    assert [status for status, _ in answers] == [401, 401, 401]
    assert len({str(body) for _, body in answers}) == 1  # nothing tells one failure from another
    assert total(service) == before and {"alice-text", "intruder"} & all_ids(service) == {"alice-text"}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_grpc_without_or_with_a_wrong_token_is_unauthenticated(service, endpoint):
    before = total(service)
    docs = [ContentDoc(**d) for d in request_for(endpoint)]
    for token in (None, WRONG):
        with pytest.raises(Exception) as refused:
            grpc(service, endpoint, docs, token=token, username="alice")
        assert "UNAUTHENTICATED" in repr(refused.value) or "unauthenticated" in str(refused.value)
    assert total(service) == before


def test_page_docs_and_health_stay_open(service):
    import urllib.error
    import urllib.request

    for path in ("/ui/", "/openapi.json", "/"):
        with urllib.request.urlopen(f"http://127.0.0.1:{service['http']}{path}", timeout=30) as response:
            assert response.status == 200


@pytest.mark.parametrize("call", [http, grpc])
def test_a_user_cannot_overwrite_or_delete_another_users_items(service, call):
    takeover = {"id": "alice-img", "owner": "bob", "modality": "text", "text": "mine now"}
    if call is http:
        _, body = call(service, "/index", [takeover], "bob")
        [indexed] = body["data"]
        _, body = call(service, "/delete", [{"id": "alice-text"}], "bob")
        [deleted] = body["data"]
    else:
        [indexed] = call(service, "/index", [ContentDoc(**takeover)], "bob")
        [deleted] = call(service, "/delete", [ContentDoc(id="alice-text")], "bob")
        indexed, deleted = indexed.dict(), deleted.dict()
    assert indexed["status"] == "error" and "belongs to another user" in indexed["error"]
    assert deleted["status"] == "forbidden"
    status, body = http(service, "/search", [{"id": "q", "text": "red"}], "root", k=100)
    [doc] = body["data"]
    owners = {m["id"]: (m["owner"], m["modality"]) for m in doc["text_matches"] + doc["image_matches"]}
    assert owners["alice-img"] == ("alice", "image") and owners["alice-text"] == ("alice", "text")


@pytest.mark.parametrize("call", [http, grpc])
def test_a_user_posts_as_themself_only(service, call):
    name = call.__name__
    docs = [{"id": f"{name}-bob-own", "owner": "bob", "modality": "text", "text": "bob writes"},
            {"id": f"{name}-as-alice", "owner": "alice", "modality": "text", "text": "not bob"}]  # posing
    if call is http:
        status, body = call(service, "/index", docs, "bob")
        assert status == 200
        out = body["data"]
    else:
        out = [d.dict() for d in call(service, "/index", [ContentDoc(**d) for d in docs], "bob")]
    assert [d["status"] for d in out] == ["indexed", "error"]
    assert "differs from the signed-in user 'bob'" in out[1]["error"]
    _, body = http(service, "/search", [{"id": "q", "text": "bob writes"}], "root", k=100)
    owners = {m["id"]: m["owner"] for m in body["data"][0]["text_matches"]}
    assert owners[f"{name}-bob-own"] == "bob" and f"{name}-as-alice" not in owners
    # and bob can delete his own
    assert http(service, "/delete", [{"id": f"{name}-bob-own"}], "bob")[1]["data"][0]["status"] == "deleted"


@pytest.mark.parametrize("call", [http, grpc])
def test_search_and_recommend_act_as_the_token_user(service, call):
    def run(endpoint, docs, user, **parameters):
        if call is http:
            status, body = call(service, endpoint, docs, user, **parameters)
            assert status == 200, body
            return body["data"][0]
        return call(service, endpoint, [ContentDoc(**d) for d in docs], user, **parameters)[0].dict()

    found = run("/search", [{"id": "q", "text": "blue circles everywhere"}], "bob", k=100, username="alice")
    owners = {m["owner"] for m in found["text_matches"] + found["image_matches"]}
    assert "alice" in owners and "bob" not in owners  # bob's own posts excluded, not alice's
    # recommendations are bob's, whatever username he names (nobody has posts as 'carol')
    recommended = run("/recommend", [{"id": "r"}], "bob", username="carol", k=5)
    assert "carol" not in (recommended.get("reason") or "")
    admin = run("/recommend", [{"id": "r"}], "root", username="carol", k=5)
    assert "'carol' has no posts" in admin["reason"]


@pytest.mark.parametrize("call", [http, grpc])
def test_a_forged_identity_parameter_is_dropped(service, call):
    forged = {AUTH.parameter: {"name": "root", "admin": True}}
    if call is http:
        status, body = call(service, "/delete", [{"id": "bob-text"}], "alice", **forged)
        assert status == 200
        [doc] = body["data"]
    else:
        doc = call(service, "/delete", [ContentDoc(id="bob-text")], "alice", **forged)[0].dict()
    assert doc["status"] == "forbidden"
    assert "bob-text" in all_ids(service)


@pytest.mark.parametrize("call", [http, grpc])
def test_admin_acts_for_anyone(service, call):
    name = call.__name__
    post = [{"id": f"{name}-for-alice", "owner": "alice", "modality": "image",
             "uri": data_uri(png_bytes((10, 200, 10)))}]
    if call is http:
        status, body = call(service, "/index", post, "root")
        assert status == 200 and body["data"][0]["status"] == "indexed", body
        status, body = call(service, "/delete", [{"id": f"{name}-for-alice"}], "root")
        assert body["data"][0]["status"] == "deleted"
    else:
        doc = ContentDoc(id=post[0]["id"], owner="alice", modality="image", blob=png_bytes((10, 200, 10)))
        assert call(service, "/index", [doc], "root")[0].status == "indexed"
        assert call(service, "/delete", [ContentDoc(id=doc.id)], "root")[0].status == "deleted"
    assert f"{name}-for-alice" not in all_ids(service)


@pytest.mark.parametrize("call", [http, grpc])
def test_clients_cannot_route_around_the_encoders(service, call):
    """A client-chosen target executor would store an embedding of the client's own choosing."""
    import json
    import urllib.request

    import numpy as np

    name, text = call.__name__, "routing test sentence"
    forged = {"id": f"{name}-routed", "owner": "alice", "modality": "text", "text": text, "embedding": [1.0] * 32}
    if call is http:  # refused outright over HTTP (issue 15), then sent as a plain request
        body = json.dumps({"data": [forged], "header": {"targetExecutor": "indexer"}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{service['http']}/index", body, {
            "Content-Type": "application/json", "Authorization": f"Bearer {service['tokens']['root']}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 400 and "target_executor" in json.loads(refused.value.read())["detail"]
        _, sent = http(service, "/index", [forged], "root")
        assert sent["data"][0]["status"] == "indexed"
    else:
        doc = ContentDoc(**{**forged, "embedding": np.ones(32, np.float32)})
        [out] = service["grpc"].post("/index", DocList[ContentDoc]([doc]), target_executor="indexer",
                                     return_type=DocList[ContentDoc],
                                     metadata=(("authorization", f"Bearer {service['tokens']['root']}"),))
        assert out.status == "indexed"
    http(service, "/index", [{"id": f"{name}-plain", "owner": "alice", "modality": "text", "text": text}], "root")
    _, body = http(service, "/search", [{"id": "q", "text": text}], "root", k=100, modalities=["text"])
    scores = {m["id"]: m["score"] for m in body["data"][0]["text_matches"]}
    assert scores[f"{name}-routed"] == pytest.approx(scores[f"{name}-plain"], abs=1e-5)  # both encoded here
