"""Operating the service: ``--metrics`` (Jina's Prometheus endpoints plus the indexer's own
series) and the gateway's one JSON line per request, read from a running service."""
import json
import re
import urllib.request

import pytest
from docarray import DocList

from crossmodal.api.schemas import ContentDoc
from crossmodal.serve.metrics import INDEXED, SIZE
from tests.harness import TINY_MODEL, Server, free_port, http_post, run_app

SECRET_TEXT = "a very private sentence about seven green owls"


def scrape(port: int) -> dict:
    """Prometheus text -> {'name{labels}': value}, labels as written (sorted by the client)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for row in text.splitlines():
        if row and not row.startswith("#"):
            key, value = row.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def value(samples: dict, name: str, **labels) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for key, v in samples.items():
        found = re.fullmatch(r"(\w+)(?:\{(.*)\})?", key)
        if found.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or ""))
        if all(have.get(k) == v_ for k, v_ in labels.items()):
            total += v
    return total


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("ops") / "workspace"
    added = run_app("-t", "adduser", "alice", "--workspace", str(workspace))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip().splitlines()[-1]
    metrics = free_port()
    server = Server(workspace, free_port(), free_port(), "--model", TINY_MODEL, "--pretrained", "none",
                    "--auth", "--metrics", str(metrics), token=token)
    with server:
        banner = server.log.read_text()
        found = re.search(r"indexer\S* :(\d+)", banner)
        assert found, banner[-2000:]
        yield {"server": server, "token": token, "gateway": metrics, "indexer": int(found.group(1))}


def exercise(service) -> None:
    """Three requests reach the Flow (two HTTP /index, one gRPC /search); one is refused."""
    from jina import Client

    server, token = service["server"], service["token"]
    docs = [{"id": "p1", "owner": "alice", "modality": "text", "text": SECRET_TEXT},
            {"id": "p2", "owner": "alice", "modality": "text", "text": "two red circles"},
            {"id": "p3", "owner": "alice", "modality": "text"}]  # no text: answered status error
    status, body = http_post(server.http_port, "/index", docs, token=token)
    assert status == 200 and [d["status"] for d in body["data"]] == ["indexed", "indexed", "error"]
    status, body = http_post(server.http_port, "/index", docs[:1], token=token)
    assert status == 200 and body["data"][0]["status"] == "updated"
    assert http_post(server.http_port, "/index", docs[1:2])[0] == 401
    grpc = Client(host="127.0.0.1", port=server.grpc_port)
    found = grpc.post("/search", inputs=DocList[ContentDoc]([ContentDoc(id="q1", text="red circles")]),
                      return_type=DocList[ContentDoc], metadata=(("authorization", f"Bearer {token}"),))
    assert found[0].status == "ok"


@pytest.fixture(scope="module")
def measured(service):
    before = {"gateway": scrape(service["gateway"]), "indexer": scrape(service["indexer"])}
    lines_before = len(service["server"].log.read_text().splitlines())
    exercise(service)
    after = {"gateway": scrape(service["gateway"]), "indexer": scrape(service["indexer"])}
    log = service["server"].log.read_text().splitlines()[lines_before:]
    return before, after, [json.loads(row) for row in log if row.startswith('{"time"')]


def test_gateway_counts_the_requests_that_reached_the_flow(measured):
    before, after, _ = measured
    moved = value(after["gateway"], "jina_successful_requests_total") - value(before["gateway"],
                                                                             "jina_successful_requests_total")
    assert moved == 3  # the refused request never reached the Flow
    assert value(after["gateway"], "jina_failed_requests_total") == value(before["gateway"], "jina_failed_requests_total")


def test_indexer_reports_latency_per_endpoint_and_documents_indexed(measured):
    before, after, _ = measured

    def delta(name, **labels):
        return value(after["indexer"], name, **labels) - value(before["indexer"], name, **labels)

    assert delta("jina_process_request_seconds_count", executor_endpoint="/index") == 2
    assert delta("jina_process_request_seconds_count", executor_endpoint="/search") == 1
    assert delta(f"{INDEXED}_total", status="indexed") == 2  # the document without text was not stored
    assert delta(f"{INDEXED}_total", status="updated") == 1
    assert value(after["indexer"], SIZE, modality="text", shard="0") == 2
    assert value(after["indexer"], SIZE, modality="image", shard="0") == 0


def test_gateway_logs_one_json_line_per_request_without_content(measured):
    _, _, lines = measured
    assert [(r["protocol"], r["endpoint"], r["docs"], r["status"], r["user"]) for r in lines] == [
        ("http", "/index", 3, 200, "alice"),
        ("http", "/index", 1, 200, "alice"),
        ("http", "/index", None, 401, None),
        ("grpc", "/search", 1, "OK", "alice"),
    ]
    for row in lines:
        assert set(row) == {"time", "protocol", "endpoint", "docs", "status", "ms", "user"}
        assert row["ms"] >= 0 and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", row["time"])
        text = json.dumps(row)
        assert SECRET_TEXT not in text and "p1" not in text and "red circles" not in text
