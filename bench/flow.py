"""The product through its Flow: indexing rate, query latency, hop overhead, memory, start-up, baseline.

Every Flow runs in its own process (tests/harness.py): this process has run torch
and FAISS already, and Jina forking executors from it could deadlock.
"""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from docarray import DocList
from tqdm import tqdm

from bench.common import Figure, Report, figure
from bench.encoders import MODEL, SHORT_QUERY, sample_images
from crossmodal.api.schemas import ContentDoc
from tests.harness import ROOT, Server, app_env, free_port, run_app

ENV = {**app_env(), "GRPC_VERBOSITY": "ERROR"}


def post(port: int, path: str, payload: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def index_rate(report: Report, workdir: Path, count: int) -> Figure:
    """``app.py -t index`` on a folder of JPEGs: decode, preprocess, encode, store."""
    folder = workdir / "images"
    folder.mkdir()
    for i, blob in enumerate(sample_images(count, seed=7)):
        (folder / f"{i:05d}.jpg").write_bytes(blob)
    done = run_app("-t", "index", "--data", str(folder), "--workspace", str(workdir / "ws-index"),
                   "--model", MODEL, "--pretrained", "none", timeout=1800)
    if done.returncode:
        raise RuntimeError(f"app.py -t index failed:\n{done.stderr[-3000:]}")
    rate = float(re.search(r"\(([\d.]+) docs/s\)", done.stdout).group(1))
    return report.add(Figure(f"app.py -t index, {count} JPEGs through the Flow", rate, "img/s"))


def populate(workspace: Path, n: int, vectors_out: Path) -> None:
    """A store of n clustered unit vectors (half texts, half images), 200 posts per user.

    The indexer rebuilds FAISS from it at start-up, as after a restart without saved
    indexes; the same vectors go to ``vectors_out`` for the baseline to search.
    """
    from bench.vectors import clustered
    from crossmodal.index.store import Item, Store
    from crossmodal.model.resolve import resolve

    spec = resolve(MODEL, "none")
    store = Store(workspace)
    store.bind_model(spec.label, 512)
    chunks = []
    for start in tqdm(range(0, n, 10_000), desc="populating store", unit="x10k"):
        x = clustered(min(10_000, n - start), seed=start)
        chunks.append(x)
        store.upsert([Item(f"item{start + i}", f"user{(start + i) % (n // 200)}", ("text", "image")[i % 2], v,
                           text=f"synthetic {start + i}") for i, v in enumerate(x)])
    store.close()
    np.save(vectors_out, np.concatenate(chunks))


def search_alone(report: Report, workspace: Path) -> Figure:
    """What the indexer does per text query: both modalities, k=10, rows fetched."""
    from crossmodal.index.content import ContentIndex, IndexConfig
    from crossmodal.model.resolve import resolve

    index = ContentIndex(IndexConfig(workspace, resolve(MODEL, "none").label, 512))
    query = np.random.default_rng(1).normal(size=(1, 512)).astype(np.float32)
    query /= np.linalg.norm(query)
    samples = []
    for _ in range(30):
        start = time.perf_counter()
        for modality in ("text", "image"):
            index.search(query, modality, 10, "user1")
        samples.append(time.perf_counter() - start)
    index.close()
    return report.add(figure("search alone (ContentIndex, 2 modalities, k=10)", samples, "ms", scale=1000))


def query_latency(report: Report, client, http_port: int, label: str, repeats: int) -> tuple[Figure, Figure]:
    docs = DocList[ContentDoc]([ContentDoc(id="q", text=SHORT_QUERY)])
    params = {"k": 10, "username": "user1"}
    grpc, transport = [], []
    for i in range(repeats + 2):
        start = time.perf_counter()
        [response] = client.post("/search", docs, parameters=params, return_responses=True)
        if i >= 2:
            grpc.append(time.perf_counter() - start)
            transport.append(grpc[-1] - executor_seconds(response))
    payload = {"data": [{"id": "q", "text": SHORT_QUERY}], "parameters": params}
    http = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        post(http_port, "/search", payload)
        if i >= 2:
            http.append(time.perf_counter() - start)
    g = report.add(figure(f"{label} query p50 over gRPC", grpc, "ms", scale=1000,
                          note=f"p95 {np.percentile(grpc, 95) * 1000:.1f} ms"))
    h = report.add(figure(f"{label} query p50 over HTTP", http, "ms", scale=1000,
                          note=f"p95 {np.percentile(http, 95) * 1000:.1f} ms"))
    report.add(figure(f"{label}: gRPC time outside executors", transport, "ms", scale=1000,
                      note="per request: end to end minus the executors' own times from Jina's routes"))
    return g, h


def executor_seconds(response) -> float:
    """Time spent inside executors, from the routes Jina records (skipped hops have no start)."""
    total = 0.0
    for route in response.routes:
        if route.executor != "gateway" and route.start_time.seconds and route.end_time.seconds:
            total += (route.end_time.ToNanoseconds() - route.start_time.ToNanoseconds()) / 1e9
    return total


def recommend_latency(report: Report, client, search_grpc: Figure, repeats: int) -> Figure:
    """/recommend for a user with 200 posts, against one /search of the same k."""
    docs = DocList[ContentDoc]([ContentDoc(id="r")])
    samples = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        client.post("/recommend", docs, parameters={"username": "user1", "k": 10}, return_type=DocList[ContentDoc])
        if i >= 2:
            samples.append(time.perf_counter() - start)
    rec = report.add(figure("recommend p50 over gRPC (200 posts, k=10)", samples, "ms", scale=1000,
                            note=f"p95 {np.percentile(samples, 95) * 1000:.1f} ms"))
    report.add(Figure("recommend p50 / search p50", rec.median / search_grpc.median, "x"))
    return rec


def refine_latency(report: Report, client, repeats: int) -> list[Figure]:
    """/refine with 20 labels (10 relevant, 10 not), each method, against /search of the same
    query, interleaved request by request."""
    docs = DocList[ContentDoc]([ContentDoc(id="q", text=SHORT_QUERY)])
    base = {"k": 10, "username": "user1"}
    marks = {"positive": [f"item{i}" for i in range(0, 40, 4)], "negative": [f"item{i}" for i in range(1, 40, 4)]}
    calls = {"search": ("/search", base), **{method: ("/refine", {**base, **marks, "method": method})
                                             for method in ("rocchio", "linear")}}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(repeats + 2):
        for name, (endpoint, parameters) in calls.items():
            start = time.perf_counter()
            client.post(endpoint, docs, parameters=parameters, return_type=DocList[ContentDoc])
            if i >= 2:
                samples[name].append(time.perf_counter() - start)
    search = report.add(figure("search p50 over gRPC, interleaved with /refine", samples["search"], "ms", scale=1000))
    ratios = []
    for method in ("rocchio", "linear"):
        refine = report.add(figure(f"refine p50 over gRPC (20 labels, {method})", samples[method], "ms", scale=1000,
                                   note=f"p95 {np.percentile(samples[method], 95) * 1000:.1f} ms"))
        ratio = refine.median / search.median
        ratios.append(report.add(Figure(f"refine p50 / search p50 ({method})", ratio, "x", target="<= 1.5x",
                                        ratio=ratio, passed=ratio <= 1.5)))
    return ratios


def noop_latency(report: Report, workdir: Path, repeats: int) -> Figure:
    """The product's topology with executors that do nothing: what the hops alone cost."""
    from jina import Client

    grpc_port, http_port = free_port(), free_port()
    os.environ.update({"NOOP_GRPC_PORT": str(grpc_port), "NOOP_HTTP_PORT": str(http_port),
                       "CROSSMODAL_ROOT": str(ROOT)})
    serve = ("from jina import Flow; "
             f"Flow.load_config({str(ROOT / 'bench' / 'noop' / 'flow.yml')!r}).__enter__().block()")
    with Server(workdir / "noop", grpc_port, http_port, command=[sys.executable, "-c", serve], ready="/search"):
        g, _ = query_latency(report, Client(host="127.0.0.1", port=grpc_port), http_port, "no-op topology", repeats)
    return g


def executor_memory(report: Report) -> None:
    """Resident memory of the encoder executor (both towers) vs the full CLIP, each in a fresh process.

    Two views: the whole process (what ``ps`` shows; a Jina executor process also carries
    the torch + jina runtime, ~1 GB RSS of which ~0.5 GB shared libraries), and what
    loading the model added to it.
    """
    imports = "import jina, open_clip, torch; from crossmodal.model import encode, towers"
    total, model = {}, {}
    (ROOT / "workspace").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-mmap-", dir=ROOT / "workspace") as mmap_dir:  # on disk
        load = {  # the encoder as the Flow starts it: its token table mapped from a file
            "encoder executor": "from executors.clip.executor import ClipEncoder as E; "
                                f"e=E(model=%r, pretrained='none', mmap_dir={mmap_dir!r})",
            "full CLIP, one process": "torch.manual_seed(0); m=open_clip.create_model_and_transforms(%r)",
        }
        for name, snippet in load.items():
            code = (f"{imports}; import os; from bench.common import rss_mb; before = rss_mb(os.getpid()); "
                    f"{snippet % MODEL}; print('RSS', before, rss_mb(os.getpid()))")
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
            before, after = map(float, re.search(r"RSS ([\d.]+) ([\d.]+)", out.stdout).groups())
            total[name], model[name] = after, after - before
            report.add(Figure(f"RSS {name}", after, "MB", note=f"model adds {after - before:.0f} MB"))
    for label, values in (("model memory", model), ("whole-process RSS", total)):
        ratio = values["encoder executor"] / values["full CLIP, one process"]
        report.add(Figure(f"encoder executor / one full CLIP ({label})", ratio, "x", target="<= 1.3x",
                          ratio=ratio, passed=ratio <= 1.3))


def baseline(report: Report, client, texts: list[str], images: list[bytes], vectors: Path, repeats: int) -> Figure:
    """Seed-service design (one item per request) vs our batched /index, same items, same model.

    The baseline starts with the same 100k vectors our Flow holds, so both searches scan
    the same index (feeding it 100k items one request at a time would take hours).
    """
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.baseline_flask", str(port), str(vectors)], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        items = [{"id": f"t{i}", "text": t} for i, t in enumerate(texts)] + [
            {"id": f"i{i}", "image": base64.b64encode(b).decode()} for i, b in enumerate(images)]
        start = time.time()
        for item in items:
            post(port, "/add", item)
        theirs = report.add(Figure(f"baseline Flask: index {len(items)} items one per request",
                                   len(items) / (time.time() - start), "items/s"))
        docs = [ContentDoc(id=f"bt{i}", owner="bench", modality="text", text=t) for i, t in enumerate(texts)] + [
            ContentDoc(id=f"bi{i}", owner="bench", modality="image", blob=b) for i, b in enumerate(images)]
        start = time.time()
        client.post("/index", DocList[ContentDoc](docs), request_size=32, return_type=DocList[ContentDoc])
        ours = report.add(Figure(f"ours: /index {len(docs)} items, batched over gRPC",
                                 len(docs) / (time.time() - start), "items/s"))
        report.ratio("batched indexing / baseline", ours, theirs, ">= 3x", 3.0)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            post(port, "/search", {"text": SHORT_QUERY, "k": 10})
            samples.append(time.perf_counter() - start)
        theirs_q = report.add(figure("baseline Flask: text query p50 over HTTP", samples, "ms", scale=1000))
        return theirs_q
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(30)


def run(report: Report, quick: bool) -> dict[str, Figure]:
    """The figures that run.py relates to the encoder benchmarks: index rate, query and search p50, no-op p50."""
    from jina import Client

    repeats = 20 if quick else 50
    n_items = 100_000
    with tempfile.TemporaryDirectory(prefix="crossmodal-bench-") as tmp:
        tmp = Path(tmp)
        rate = index_rate(report, tmp, 32 if quick else 128)
        workspace = tmp / "ws-100k"
        vectors = tmp / "vectors.npy"
        populate(workspace, n_items, vectors)
        search = search_alone(report, workspace)
        executor_memory(report)
        server = Server(workspace, free_port(), free_port(), "--model", MODEL, "--pretrained", "none")
        start = time.time()
        with server:  # ready once /stats answers through the Flow
            report.add(Figure(f"start-up: app.py -t query to first answer ({n_items:,} items)",
                              time.time() - start, "s"))
            client = Client(host="127.0.0.1", port=server.grpc_port)
            grpc, http = query_latency(report, client, server.http_port, f"Flow @ {n_items:,} items", repeats)
            recommend_latency(report, client, grpc, repeats)
            refine_latency(report, client, repeats)
            theirs_q = baseline(report, client, [f"a photo number {i} of shapes" for i in range(64 if quick else 256)],
                                sample_images(8 if quick else 32, seed=3), vectors, repeats)
        ratio = theirs_q.median / http.median
        report.add(Figure("search p50: baseline / ours (HTTP)", ratio, "x", target=">= 1x (ours no slower)",
                          ratio=ratio, passed=ratio >= 1.0, note=f"both search {n_items:,} items"))
        noop = noop_latency(report, tmp, repeats)
    return {"index_rate": rate, "grpc": grpc, "search": search, "noop": noop}
