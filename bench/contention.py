"""Search latency while a 10,000-document ``/index`` runs (issue 15).

The gateway sends a large request through the Flow in chunks of ``Limits.chunk_docs``
documents, one after the other, so a concurrent search waits for about one chunk at
each executor instead of for the whole request. Measured side by side: search p95 on
an idle service, then search p95 while the large request is in flight.

    python -m bench.contention [--quick] [--docs 10000]
"""
import argparse
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.common import Figure, Report, figure
from bench.encoders import MODEL
from crossmodal.settings import LIMITS
from tests.harness import TINY_MODEL, Server, free_port, http_post


def _searches(port: int, until, at_least: int = 0) -> list[float]:
    """Sequential search latencies (seconds) while ``until()`` is false, and at least ``at_least``."""
    out = []
    while not until() or len(out) < at_least:
        start = time.perf_counter()
        status, _ = http_post(port, "/search", [{"id": "q", "text": "two large red circles"}], {"k": 10})
        if status != 200:
            raise RuntimeError(f"search answered {status}")
        out.append(time.perf_counter() - start)
    return out


def run(report: Report, quick: bool = False, docs: int = 10_000) -> dict:
    model = TINY_MODEL if quick else MODEL
    print(f"search during a {docs:,}-document /index ({model}, chunks of {LIMITS.chunk_docs}):", flush=True)
    with TemporaryDirectory() as tmp:
        with Server(Path(tmp) / "ws", free_port(), free_port(), "--model", model, "--pretrained", "none") as server:
            http_post(server.http_port, "/index", [{"id": "seed", "owner": "a", "modality": "text", "text": "seed"}])
            idle = _searches(server.http_port, lambda: True, at_least=40)
            batch = [{"id": f"d{i}", "owner": f"u{i % 100}", "modality": "text",
                      "text": f"a small {['red', 'green', 'blue'][i % 3]} shape number {i} on a grey background"}
                     for i in range(docs)]
            done, result = threading.Event(), {}

            def index() -> None:
                started = time.perf_counter()
                result["status"], body = http_post(server.http_port, "/index", batch, timeout=3600)
                result["seconds"] = time.perf_counter() - started
                result["indexed"] = sum(d.get("status") == "indexed" for d in body.get("data", []))
                done.set()

            worker = threading.Thread(target=index)
            worker.start()
            time.sleep(0.5)  # the request is on its way
            during = _searches(server.http_port, done.is_set)
            worker.join()
    if result.get("indexed") != docs:
        raise RuntimeError(f"/index answered {result.get('status')} with {result.get('indexed')} of {docs} indexed")
    setup = f"{model}, {docs:,} docs in {result['seconds']:.0f} s, {len(during)} searches"
    p95 = {name: float(sorted(s)[int(0.95 * (len(s) - 1))]) * 1000 for name, s in (("idle", idle), ("during", during))}
    report.add(figure("search p50, idle service", idle, "ms", scale=1000, note=f"p95 {p95['idle']:.0f} ms"))
    report.add(figure("search p50 during a large /index", during, "ms", scale=1000,
                      note=f"p95 {p95['during']:.0f} ms; {setup}"))
    report.add(Figure("search p95 during a large /index / p95 idle", p95["during"] / p95["idle"], "x",
                      note=f"chunks of {LIMITS.chunk_docs} documents"))
    print(f"search p95 {p95['during']:.0f} ms during the /index vs {p95['idle']:.0f} ms idle ({setup})")
    return {"p95_idle_ms": p95["idle"], "p95_during_ms": p95["during"], "index_seconds": result["seconds"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the tiny test model instead of ViT-B-32")
    parser.add_argument("--docs", type=int, default=10_000)
    args = parser.parse_args()
    run(Report(), args.quick, args.docs)
