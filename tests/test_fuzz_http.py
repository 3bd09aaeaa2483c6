"""Property-based fuzz of the HTTP API from its own OpenAPI schema (schemathesis + hypothesis).

Every operation gets schema-valid and schema-violating requests, with an admin
token, no token or a wrong one. Properties: no 5xx, a 401 exactly when the token
is missing or wrong, the server keeps serving, and afterwards ``/stats`` counts
exactly what the responses acknowledged (``indexed``/``updated`` minus ``deleted``).
Bounded by examples (no shrinking, no example database) so CI stays fast.
"""
import json
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.harness import TINY_MODEL, Server, data_uri, free_port, png_bytes, run_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in requirements.txt; install it to fuzz")

EXAMPLES = 10  # per operation and generation mode: ~160 requests
WRONG = "cm_0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

# Schema-driven bodies almost never form a valid document; these do (or nearly), on a small
# id pool so that writes update and delete each other, and the /stats check means something.
IDS = st.sampled_from([f"doc-{i}" for i in range(8)])
TEXT_DOC = st.fixed_dictionaries(
    {"id": IDS, "owner": st.sampled_from(["root", "alice"]), "modality": st.just("text"), "text": st.text(max_size=40)},
    optional={"tags": st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3)})
IMAGE_DOC = st.fixed_dictionaries(
    {"id": IDS, "owner": st.just("alice"), "modality": st.just("image"),
     "uri": st.sampled_from([data_uri(png_bytes()), "data:image/png;base64,AAAA", "/etc/passwd", "http://127.0.0.1:9/x.png"])})
WRITES = st.one_of(st.tuples(st.just("/index"), st.lists(st.one_of(TEXT_DOC, IMAGE_DOC), max_size=4)),
                   st.tuples(st.just("/delete"), st.lists(st.fixed_dictionaries({"id": IDS}), max_size=3)))


def post(port: int, endpoint: str, data: list, token: str) -> tuple[int, str]:
    """Status and raw body: a server fault may answer plain text (Starlette's own 500)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{endpoint}", json.dumps({"data": data}).encode(),
                                     {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def load_schema(port: int):
    """The served schema, with pydantic v1's nested ``#/definitions/`` refs pointed at
    ``#/components/schemas/`` where FastAPI put them (unresolvable as served)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=30) as response:
        raw = response.read().decode().replace("#/definitions/", "#/components/schemas/")
    return schemathesis.openapi.from_dict(json.loads(raw))


def test_fuzzed_http_api_never_fails_and_stats_match_acknowledged_writes(tmp_path):
    workspace = tmp_path / "workspace"
    admin = run_app("-t", "adduser", "root", "--admin", "--workspace", str(workspace)).stdout.split()[-1]
    with Server(workspace, free_port(), free_port(), "--model", TINY_MODEL, "--pretrained", "none", "--auth",
                token=admin) as server:
        start = time.time()
        base_url = f"http://127.0.0.1:{server.http_port}"
        schema = load_schema(server.http_port)
        live: dict[str, str] = {}  # acknowledged id -> modality
        faults = Counter()  # (operation, status, detail) -> how often
        calls = Counter()

        def record(path, body) -> None:
            docs = body.get("data") if isinstance(body, dict) else None
            for doc in docs if isinstance(docs, list) else []:
                if path == "/index" and doc.get("status") in ("indexed", "updated"):
                    live[doc["id"]] = doc["modality"]
                elif path == "/delete" and doc.get("status") == "deleted":
                    live.pop(doc["id"], None)

        for operation in schema.get_all_operations():
            operation = operation.ok()
            strategy = st.one_of(operation.as_strategy(schemathesis.GenerationMode.POSITIVE),
                                 operation.as_strategy(schemathesis.GenerationMode.NEGATIVE))

            @given(case=strategy, token=st.sampled_from([admin, admin, None, WRONG]))
            @settings(max_examples=2 * EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            def fuzz(case, token):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = case.call(base_url=base_url, headers=headers, timeout=60)
                calls[case.operation.label] += 1
                if response.status_code >= 500:
                    faults[case.operation.label, response.status_code, response.text[:160]] += 1
                needs_token = case.operation.method.upper() == "POST"
                if needs_token and token != admin:
                    assert response.status_code == 401, (case.operation.label, response.status_code)
                if response.status_code == 200 and token == admin:
                    record(case.operation.path, response.json())

            fuzz()

        @given(writes=st.lists(WRITES, min_size=1, max_size=4))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def fuzz_writes(writes):
            for endpoint, docs in writes:
                status, body = post(server.http_port, endpoint, docs, admin)
                calls[f"POST {endpoint} (documents)"] += 1
                if status >= 500:
                    faults[f"POST {endpoint} (documents)", status, body[:160]] += 1
                elif status == 200:
                    record(endpoint, json.loads(body))

        fuzz_writes()
        status, body = post(server.http_port, "/stats", [], admin)
        assert status == 200, body  # still serving
        counts = json.loads(body)["data"][0]["tags"]["count"]
        acknowledged = {m: sum(1 for v in live.values() if v == m) for m in ("text", "image")}
        print(f"fuzz: {sum(calls.values())} requests {dict(calls)} in {time.time() - start:.1f}s; "
              f"{sum(faults.values())} server errors; stats {counts}, acknowledged {acknowledged}")
        assert counts == acknowledged
        assert not faults, "server errors:\n" + "\n".join(f"{n} x {label} -> {code}: {detail}"
                                                          for (label, code, detail), n in faults.most_common())
