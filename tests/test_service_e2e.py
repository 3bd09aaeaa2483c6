"""The service end to end, driven as users drive it: app.py, HTTP (curl-like) and the Jina Client.

One server per module (start-up costs seconds). The fixture indexes a known base set;
each test writes only ids of its own and asserts changes relative to what it saw, so
the tests pass in any order and alone.
"""
import json
import signal
import time
from pathlib import Path

import pytest
from docarray import DocList
from jina import Client
from jina.excepts import BadServer

from crossmodal.api.schemas import ContentDoc
from tests.harness import TINY_MODEL, Server, data_uri, free_port, http_post, png_bytes, run_app

MODEL = ["--model", TINY_MODEL, "--pretrained", "none"]
COLORS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (30, 40, 220), "yellow": (240, 220, 10)}


BASE = [  # indexed by the fixture; tests read these and never change them
    ContentDoc(id="a-text", owner="alice", modality="text", text="a red square", tags={"lang": "en"}),
    ContentDoc(id="a-img", owner="alice", modality="image", blob=png_bytes((200, 10, 10))),
    ContentDoc(id="b-img", owner="bob", modality="image", blob=png_bytes((10, 10, 200), shape="circle")),
    ContentDoc(id="b-text", owner="bob", modality="text", text="blue circles everywhere"),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    (data / "images").mkdir(parents=True)
    rows = ["image,caption,owner"]
    for i, (name, rgb) in enumerate(COLORS.items()):
        (data / "images" / f"{name}.png").write_bytes(png_bytes(rgb, shape="circle" if i % 2 else "rect"))
        rows.append(f"{name}.png,a {name} shape,{'carol' if i % 2 else 'dave'}")
    (data / "captions.csv").write_text("\n".join(rows) + "\n")
    roots = base / "roots"
    roots.mkdir()
    (roots / "local.png").write_bytes(png_bytes((120, 60, 200)))
    workspace = base / "workspace"

    first = run_app("-t", "index", "--data", str(data), "--workspace", str(workspace), *MODEL)
    again = run_app("-t", "index", "--data", str(data), "--workspace", str(workspace), *MODEL)
    server = Server(workspace, free_port(), free_port(), *MODEL, "--data-root", str(roots))
    server.start()
    try:
        grpc = Client(host="127.0.0.1", port=server.grpc_port)
        indexed = grpc.post("/index", DocList[ContentDoc](BASE), return_type=DocList[ContentDoc])
        assert [d.status for d in indexed] == ["indexed"] * len(BASE)
        yield {"server": server, "cli": (first, again), "workspace": workspace, "roots": roots,
               "grpc": grpc, "http": server.http_port}
    finally:
        server.stop()


def grpc_post(service, endpoint, docs, **parameters):
    return service["grpc"].post(endpoint, DocList[ContentDoc](docs), parameters=parameters,
                                return_type=DocList[ContentDoc])


def stats(service) -> dict:
    status, body = http_post(service["http"], "/stats", [])
    assert status == 200
    return body["data"][0]["tags"]


def test_cli_index_summary_and_idempotent_rerun(service):
    first, again = service["cli"]
    assert first.returncode == 0, first.stderr[-2000:]
    assert "indexed 8, updated 0, failed 0" in first.stdout
    assert "indexed 0, updated 8, failed 0" in again.stdout
    assert '"endpoint"' not in first.stdout + first.stderr  # no request-log lines in a batch job's progress bar
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", text="a yellow shape")], k=100, modalities=["text"])
    assert {f"images/{c}.png#caption1" for c in COLORS} <= {m.id for m in doc.text_matches}


def test_grpc_index_reports_each_document(service):
    before = stats(service)["count"]
    docs = [
        ContentDoc(id="g-text", owner="gina", modality="text", text="a red square", tags={"lang": "en"}),
        ContentDoc(id="g-img", owner="gina", modality="image", blob=png_bytes((200, 10, 10))),
        ContentDoc(id="hal-img", owner="hal", modality="image", blob=png_bytes((10, 120, 90), shape="circle")),
        ContentDoc(id="hal-text", owner="hal", modality="text", text="blue circles everywhere"),
        ContentDoc(id="bad-bytes", owner="bob", modality="image", blob=b"not an image"),
        ContentDoc(id="no-owner", modality="text", text="orphan"),
        ContentDoc(id="bad-modality", owner="bob", modality="video", text="x"),
        ContentDoc(id="empty", owner="bob", modality="text", text=""),
    ]
    result = {d.id: d for d in grpc_post(service, "/index", docs)}
    assert [result[i].status for i in ("g-text", "g-img", "hal-img", "hal-text")] == ["indexed"] * 4
    assert result["bad-bytes"].error.startswith("blob: not a decodable image")
    assert result["no-owner"].error.startswith("owner:")
    assert result["bad-modality"].error.startswith("modality:")
    assert result["empty"].error.startswith("text:")
    assert all(result[i].status == "error" for i in ("bad-bytes", "no-owner", "bad-modality", "empty"))
    assert stats(service)["count"] == {"text": before["text"] + 2, "image": before["image"] + 2}


def test_http_index_with_data_uris_and_guarded_paths(service):
    roots = service["roots"]
    status, body = http_post(service["http"], "/index", [
        {"id": "h-img", "owner": "bob", "modality": "image", "uri": data_uri(png_bytes((0, 180, 180)))},
        {"id": "h-local", "owner": "bob", "modality": "image", "uri": str(roots / "local.png")},
        {"id": "h-escape", "owner": "bob", "modality": "image", "uri": str(roots / ".." / "e2e.log")},
        {"id": "h-passwd", "owner": "bob", "modality": "image", "uri": "/etc/passwd"},
        {"id": "h-bad64", "owner": "bob", "modality": "image", "uri": "data:image/png;base64,@@@"},
    ])
    assert status == 200
    result = {d["id"]: d for d in body["data"]}
    assert result["h-img"]["status"] == "indexed" and result["h-local"]["status"] == "indexed"
    for bad in ("h-escape", "h-passwd", "h-bad64"):
        assert result[bad]["status"] == "error" and result[bad]["error"].startswith("uri:")
    assert "data roots" in result["h-passwd"]["error"]


def test_identical_image_comes_first_over_grpc_and_http(service):
    query = png_bytes((10, 10, 200), shape="circle")
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", blob=query)], k=3, modalities=["image"])
    assert doc.image_matches[0].id == "b-img" and doc.image_matches[0].score >= 0.99
    assert not doc.text_matches
    status, body = http_post(service["http"], "/search", [{"id": "q", "uri": data_uri(query)}],
                             {"k": 3, "with_thumbnails": True})
    first = body["data"][0]["image_matches"][0]
    assert status == 200 and first["id"] == "b-img" and first["score"] >= 0.99
    assert first["owner"] == "bob" and first["thumbnail"].startswith("data:image/jpeg;base64,")


def test_requester_never_sees_own_content_and_results_sorted(service):
    for username in ("alice", "bob"):
        [doc] = grpc_post(service, "/search", [ContentDoc(id="q", text="red square")], k=100, username=username)
        for matches in (doc.text_matches, doc.image_matches):
            assert matches, "other owners' content must be found"
            assert all(m.owner != username for m in matches)
            scores = [m.score for m in matches]
            assert scores == sorted(scores, reverse=True)
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", text="red square")], k=2)
    assert len(doc.text_matches) == 2 and len(doc.image_matches) == 2
    assert doc.text_matches[0].tags is not None


def test_jina_http_client_works_too(service):
    client = Client(host="127.0.0.1", port=service["http"], protocol="http")
    [doc] = client.post("/search", DocList[ContentDoc]([ContentDoc(id="q", text="blue circles")]),
                        parameters={"k": 1, "modalities": ["text"]}, return_type=DocList[ContentDoc])
    assert len(doc.text_matches) == 1 and doc.text_matches[0].owner


def test_refine_over_http_and_grpc_hides_marked_items(service):
    query = {"id": "q", "text": "a red square"}
    status, body = http_post(service["http"], "/search", [query], {"k": 4})
    first = body["data"][0]
    marked = {"positive": [first["image_matches"][0]["id"]], "negative": [first["text_matches"][0]["id"]]}
    status, body = http_post(service["http"], "/refine", [query], {"k": 4, **marked})
    assert status == 200, body
    doc = body["data"][0]
    assert doc["feedback"] == {"method": "rocchio", "positive": 1, "negative": 1, "weak_negatives": 0}
    returned = {m["id"] for kind in ("text_matches", "image_matches") for m in doc[kind]}
    assert returned and not returned & {*marked["positive"], *marked["negative"]}
    [grpc_doc] = grpc_post(service, "/refine", [ContentDoc(id="q", text="a red square")], k=4, **marked)
    assert [m.id for m in grpc_doc.image_matches] == [m["id"] for m in doc["image_matches"]]
    [image_doc] = grpc_post(service, "/refine", [ContentDoc(id="qi", blob=png_bytes((200, 10, 10)))], k=4, **marked)
    assert image_doc.status == "ok" and image_doc.feedback["positive"] == 1 and image_doc.image_matches  # image queries too
    status, body = http_post(service["http"], "/refine", [query], {"positive": ["no-such-id"]})
    assert status == 422 and body["field"] == "positive" and "unknown id" in body["detail"]


@pytest.mark.parametrize("parameters, name", [
    ({"k": 0}, "'k'"), ({"k": -1}, "'k'"), ({"k": "ten"}, "'k'"), ({"modalities": ["audio"]}, "'modalities'"),
])
def test_bad_parameters_are_clear_errors_and_service_survives(service, parameters, name):
    status, body = http_post(service["http"], "/search", [{"id": "q", "text": "red"}], parameters)
    assert status == 422 and name in body["detail"] and body["field"] == name.strip("'")
    with pytest.raises(BadServer) as failure:
        grpc_post(service, "/search", [ContentDoc(id="q", text="red")], **parameters)
    assert "RequestError" in str(failure.value) and name.strip("'") in str(failure.value)
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", text="red")], k=1)
    assert len(doc.text_matches) == 1


def test_upsert_replaces_content_without_duplicates(service):
    post = {"id": "u-text", "owner": "uma", "modality": "text", "text": "purple hexagons"}
    assert http_post(service["http"], "/index", [post])[1]["data"][0]["status"] in ("indexed", "updated")
    before = stats(service)["count"]
    status, body = http_post(service["http"], "/index", [{**post, "text": "green triangles now"}])
    assert body["data"][0]["status"] == "updated"
    assert stats(service)["count"] == before
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", text="green triangles now")], k=100,
                      modalities=["text"])
    found = {m.id: m for m in doc.text_matches}
    assert found["u-text"].text == "green triangles now" and found["u-text"].score >= 0.99


def test_delete_removes_from_every_index(service):
    blob = png_bytes((210, 90, 10))
    [added] = grpc_post(service, "/index", [ContentDoc(id="d-img", owner="dan", modality="image", blob=blob)])
    assert added.status in ("indexed", "updated")
    before = stats(service)["count"]
    result = grpc_post(service, "/delete", [ContentDoc(id="d-img"), ContentDoc(id="never-was")])
    assert [d.status for d in result] == ["deleted", "not_found"]
    assert stats(service)["count"] == {**before, "image": before["image"] - 1}
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", blob=blob)], k=100)
    assert "d-img" not in {m.id for m in doc.image_matches}


def test_stats_report_counts_owners_and_model(service):
    before = stats(service)
    grpc_post(service, "/index", [ContentDoc(id="s-text", owner="sam-stats", modality="text", text="stats"),
                                  ContentDoc(id="s-img", owner="sam-stats", modality="image", blob=png_bytes())])
    tags = stats(service)
    assert tags["count"] == {"text": before["count"]["text"] + 1, "image": before["count"]["image"] + 1}
    assert tags["total"] == before["total"] + 2 and tags["owners"] == before["owners"] + 1
    assert tags["model"] == f"{TINY_MODEL}/random" and tags["dim"] == 32 and tags["index_type"] == "Flat"


def test_recommend_over_http_and_grpc(service):
    status, body = http_post(service["http"], "/recommend", [{}], {"username": "bob", "k": 5})
    assert status == 200
    doc = body["data"][0]
    groups = [doc[g][m] for g in ("from_text", "from_image") for m in ("text_matches", "image_matches")]
    matches = [m for group in groups for m in group]
    assert matches and all(m["owner"] != "bob" for m in matches)
    assert all(len(group) <= 5 for group in groups)
    assert all(m["seed"] and m["cluster"] is not None for m in matches)
    [grpc_doc] = grpc_post(service, "/recommend", [ContentDoc(id="r")], username="bob", k=5)
    assert {m.id for m in grpc_doc.from_image.image_matches} == {m["id"] for m in doc["from_image"]["image_matches"]}


def test_recommend_cold_start_and_bad_parameters(service):
    status, body = http_post(service["http"], "/recommend", [{}], {"username": "nobody"})
    doc = body["data"][0]
    assert status == 200 and "no posts" in doc["reason"]
    assert not doc["from_text"]["text_matches"] and not doc["from_image"]["image_matches"]
    status, body = http_post(service["http"], "/recommend", [{}], {"k": 3})
    assert status == 422 and "username" in body["detail"]
    status, body = http_post(service["http"], "/recommend", [{}], {"username": "bob", "k": "ten"})
    assert status == 422 and "'k'" in body["detail"]
    # one answer per request: the user's history is gathered once, never once per document
    status, body = http_post(service["http"], "/recommend", [{"id": f"r{i}"} for i in range(500)], {"username": "bob"})
    assert status == 422 and body["detail"].startswith("data: /recommend answers one document per request, got ")
    with pytest.raises(Exception, match="one document per request"):
        grpc_post(service, "/recommend", [ContentDoc(id="a"), ContentDoc(id="b")], username="bob")


def _maps(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:  # not Linux, or the process is gone
        return []


def test_the_encoder_reads_its_token_table_from_an_unlinked_file_in_the_workspace(service):
    """The Flow gives the encoder its workspace (``mmap_dir``): one process, the encoder, maps
    the token table from a file there, a file that has no name left to find or clean up."""
    from crossmodal.serve.shutdown import descendants

    workspace = str(Path(service["workspace"]).resolve())
    mapping = {pid: [line for line in _maps(pid) if f"{workspace}/" in line and line.endswith("(deleted)")]
               for pid in descendants(service["server"].proc.pid)}
    assert len([pid for pid, lines in mapping.items() if lines]) == 1, mapping
    assert not [p for p in Path(workspace).rglob("*") if p.name.startswith(("tmp", "#"))]


def test_second_server_on_the_workspace_refuses(service):
    result = run_app("-t", "index", "--data", str(service["roots"]), "--workspace", str(service["workspace"]), *MODEL)
    assert result.returncode == 2 and "in use by another crossmodal server" in result.stderr


def test_crash_then_restart_keeps_acknowledged_writes(service):
    server = service["server"]
    status, body = http_post(service["http"], "/index", [
        {"id": "last-word", "owner": "erin", "modality": "text", "text": "written just before the crash"}])
    assert body["data"][0]["status"] == "indexed"
    before = stats(service)
    server.kill()
    server.start()
    assert stats(service) == before
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", text="written just before the crash")], k=1,
                      modalities=["text"])
    assert doc.text_matches[0].id == "last-word"


def _group_alive(pgid: int) -> bool:
    """Any live (not zombie) process in the group: the fields after the command's ')'."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def test_sigterm_stops_gracefully_saves_faiss_and_restart_keeps_everything(service):
    """SIGTERM to the main process only, as ``docker stop`` and systemd send it."""
    server = service["server"]
    before = stats(service)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    deadline = time.time() + 30
    while _group_alive(server.proc.pid) and time.time() < deadline:  # executors exit with it
        time.sleep(0.2)
    assert not _group_alive(server.proc.pid), "executor processes outlived the server"
    manifest = json.loads((service["workspace"] / "faiss-image.json").read_text())
    from crossmodal.index.store import Store

    assert manifest["generation"] == Store(service["workspace"], read_only=True).generation
    server.start()
    assert stats(service) == before
    [doc] = grpc_post(service, "/search", [ContentDoc(id="q", blob=png_bytes((10, 10, 200), shape="circle"))],
                      k=1, modalities=["image"])
    assert doc.image_matches[0].id == "b-img"
