"""Scale-out (issue 16): sharded HNSW search at 1M vectors, and image-encoder replicas.

Search: the collection is split by ``shard_of(id, n)`` into n ``VectorIndex``es (the
indexer's class, the service's HNSW settings), each shard is searched for its top k and
``merge_top_k`` keeps the best k, as the sharded indexer does. Shards are searched on
threads, one per shard: FAISS releases the GIL, so they run in parallel on the cores as
separate shard processes would, without adding an IPC cost that is not the service's
anyway (its transport is a Jina hop, measured on its own: ``hop_figures``). Each sharded
configuration is timed interleaved with the 1-shard one, so drift on a shared machine hits
both alike; only two configurations (~2.3 GB each at 1M) are alive at once.

Data: unit vectors from a clustered mixture (bench/vectors.py's ``clustered``, a few
thousand centres) with held-out queries from the same distribution; truth is exact search
(IndexFlatIP, chunk by chunk). Vectors, truth and built shards are cached under /tmp,
keyed by their parameters, so a second run skips building (tens of minutes on 2 shared cores).

Replicas: ``app.py -t index --replicas M`` on a few hundred generated JPEGs, M = 1 and 2
run in turns, each into a fresh workspace.

    python -m bench.shards [--vectors 1000000] [--queries 1000] [--skip-search] [--skip-hop] [--skip-replicas]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional

import faiss
import numpy as np
from faiss.contrib.exhaustive_search import knn_ground_truth
from tqdm import tqdm

from bench.common import Figure, Report, figure, summary
from bench.vectors import DIM, clustered
from crossmodal.index.shards import merge_top_k, shard_of
from crossmodal.index.vectors import VectorIndex
from crossmodal.settings import INDEX

CACHE = Path(tempfile.gettempdir()) / "crossmodal-bench-shards"
FACTORY = "HNSW32"  # the service's HNSW (--index-factory HNSW32) with INDEX.ef_search / ef_construction
CENTRES, INTRINSIC, CHUNK, K = 4000, 32, 50_000, 10
QUERY_SEED = 10**9  # data chunks use seeds 0..n: queries are held out
SHARD_COUNTS = (1, 2, 4)


# -- data, truth and shards, cached ------------------------------------------------
def cache_dir(n: int) -> Path:
    """One folder per parameter set: any change to the data or the index builds anew."""
    params = {"n": n, "dim": DIM, "centres": CENTRES, "intrinsic": INTRINSIC, "chunk": CHUNK,
              "factory": FACTORY, "ef_construction": INDEX.ef_construction, "faiss": faiss.__version__}
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    folder = CACHE / f"{n}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    return folder


def vectors(folder: Path, n: int) -> np.ndarray:
    """The collection, memory-mapped read-only: generated once, chunk by chunk (no second copy)."""
    path = folder / "vectors.npy"
    if not path.is_file():
        out = np.lib.format.open_memmap(str(path) + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
        for start in tqdm(range(0, n, CHUNK), desc="generating vectors", unit="chunk"):
            out[start:start + CHUNK] = clustered(min(CHUNK, n - start), seed=start, centres=CENTRES,
                                                 intrinsic=INTRINSIC)
        out.flush()
        del out
        Path(str(path) + ".tmp.npy").replace(path)
    return np.load(path, mmap_mode="r")


def chunks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(x), CHUNK):
        yield np.ascontiguousarray(x[start:start + CHUNK])


def ground_truth(folder: Path, x: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-k vids (row numbers) per query: IndexFlatIP over every chunk, heaps merged."""
    path = folder / f"truth-{len(queries)}.npy"
    if not path.is_file():
        print(f"exact search of {len(queries)} queries over {len(x):,} vectors (IndexFlatIP)...", flush=True)
        _, truth = knn_ground_truth(queries, chunks(x), K, metric_type=faiss.METRIC_INNER_PRODUCT)
        np.save(path, truth.astype(np.int64))
    return np.load(path)


def owners(n: int, shards: int) -> np.ndarray:
    """Each row's shard, from its document id, exactly as the indexer assigns them."""
    return np.fromiter((shard_of(f"item{i}", shards) for i in range(n)), dtype=np.int16, count=n)


def build_shard(x: np.ndarray, owner: np.ndarray, shard: int, label: str) -> VectorIndex:
    """One shard's index, added chunk by chunk from the memory-mapped collection."""
    index = VectorIndex(DIM, FACTORY, ef_search=INDEX.ef_search, ef_construction=INDEX.ef_construction)
    if not index.index.is_trained:
        raise ValueError(f"{FACTORY!r} needs training; this benchmark builds untrained-free factories only")
    with tqdm(total=int((owner == shard).sum()), desc=f"building {label}", unit="vec", unit_scale=True) as bar:
        for start in range(0, len(x), CHUNK):
            rows = np.flatnonzero(owner[start:start + CHUNK] == shard)
            index.add(rows + start, x[start:start + CHUNK][rows])
            bar.update(len(rows))
    return index


def load_shards(folder: Path, x: np.ndarray, shards: int) -> tuple[list[VectorIndex], float]:
    """The n shard indexes (from the cache, else built and saved) and the seconds building them took."""
    built, seconds, owner = [], 0.0, None
    for shard in range(shards):
        path = folder / f"{FACTORY}-{shards}-{shard}.faiss"
        index = VectorIndex.load(path, 0, DIM, FACTORY, ef_search=INDEX.ef_search,
                                 ef_construction=INDEX.ef_construction)
        timing = path.with_suffix(".build.json")
        if index is None or not timing.is_file():
            owner = owners(len(x), shards) if owner is None else owner
            start = time.time()
            index = build_shard(x, owner, shard, f"shard {shard + 1}/{shards}")
            timing.write_text(json.dumps({"seconds": time.time() - start}))
            index.save(path, 0)
        seconds += json.loads(timing.read_text())["seconds"]
        built.append(index)
    return built, seconds


# -- searching ------------------------------------------------------------------------
class ShardedSearch:
    """Ask every shard for its top k in parallel and merge, as the sharded indexer does."""

    def __init__(self, shards: list[VectorIndex]):
        self.shards = shards
        self.pool = ThreadPoolExecutor(len(shards)) if len(shards) > 1 else None
        self.work: list[float] = []  # per query: CPU seconds of the shards' searches, summed

    def _one(self, shard: VectorIndex, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        start = time.thread_time()  # CPU time of this thread: waiting for a core does not count
        scores, vids = shard.search(query, k)
        return scores, vids, time.thread_time() - start

    def __call__(self, query: np.ndarray, k: int) -> list[tuple[float, int]]:
        if self.pool is None:  # one shard: no fan-out, as the 1-shard service
            answers = [self._one(self.shards[0], query, k)]
        else:
            answers = list(self.pool.map(lambda shard: self._one(shard, query, k), self.shards))
        self.work.append(sum(seconds for _, _, seconds in answers))
        lists = [[(float(s), int(v)) for s, v in zip(scores[0], vids[0]) if v >= 0] for scores, vids, _ in answers]
        return merge_top_k(lists, k, score=lambda hit: hit[0])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def recall_at_k(found: list[list[int]], truth: np.ndarray, k: int = K) -> float:
    """Share of the exact top k that the search returned, over all queries."""
    if len(found) != len(truth):
        raise ValueError(f"recall_at_k: {len(found)} answers for {len(truth)} queries")
    hits = sum(len(set(f[:k]) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hits / (k * len(truth))


def timed_pass(search: ShardedSearch, queries: np.ndarray) -> tuple[list[float], list[list[int]]]:
    """One query at a time (a request's view): seconds per query and the vids found."""
    samples, found = [], []
    for q in queries:
        start = time.perf_counter()
        hits = search(q[None, :], K)
        samples.append(time.perf_counter() - start)
        found.append([vid for _, vid in hits])
    return samples, found


def interleaved(a: ShardedSearch, b: ShardedSearch, queries: np.ndarray, rounds: int
                ) -> tuple[list[float], list[float], list[float], list[list[int]], list[list[int]]]:
    """Both configurations query by query (a b, then b a), so drift at any time scale hits both
    alike; per-round p50 ratios b/a give the spread."""
    timed_pass(a, queries), timed_pass(b, queries)  # warm-up: a full pass each after loading
    all_a, all_b, ratios = [], [], []
    for _ in tqdm(range(rounds), desc="interleaved rounds", unit="round"):
        found: dict[int, list[list[int]]] = {id(a): [], id(b): []}
        times: dict[int, list[float]] = {id(a): [], id(b): []}
        for i, q in enumerate(queries):
            for search in ((a, b) if i % 2 == 0 else (b, a)):
                start = time.perf_counter()
                hits = search(q[None, :], K)
                times[id(search)].append(time.perf_counter() - start)
                found[id(search)].append([vid for _, vid in hits])
        all_a += times[id(a)]
        all_b += times[id(b)]
        ratios.append(float(np.median(times[id(b)]) / np.median(times[id(a)])))
    return all_a, all_b, ratios, found[id(a)], found[id(b)]


def p95(samples: list[float]) -> float:
    return float(np.percentile(samples, 95)) * 1000


def search_figures(report: Report, n: int, n_queries: int, rounds: int) -> dict:
    folder = cache_dir(n)
    x = vectors(folder, n)
    queries = clustered(n_queries, seed=QUERY_SEED, centres=CENTRES, intrinsic=INTRINSIC)
    truth = ground_truth(folder, x, queries)
    where = f"@ {n:,}, {FACTORY} efSearch {INDEX.ef_search}, k={K}"
    one, build_s = load_shards(folder, x, 1)
    single = ShardedSearch(one)
    out, one_samples = {}, []
    report.add(Figure(f"build 1 shard {where}", build_s, "s", note="measured when first built (cached)"))
    for shards in SHARD_COUNTS[1:]:
        many, build_s = load_shards(folder, x, shards)
        report.add(Figure(f"build {shards} shards {where}", build_s, "s",
                           note="one after another, measured when first built (cached)"))
        sharded = ShardedSearch(many)
        t1, tn, ratios, f1, fn = interleaved(single, sharded, queries, rounds)
        one_samples += t1
        if not out:
            out["recall_1"] = recall = recall_at_k(f1, truth)
            report.add(Figure(f"recall@10, 1 shard {where}", recall, "", target=">= 0.95", ratio=recall,
                              passed=recall >= 0.95, note=f"{n_queries} held-out queries vs IndexFlatIP"))
        recall = out[f"recall_{shards}"] = recall_at_k(fn, truth)
        report.add(Figure(f"recall@10, {shards} shards {where}", recall, "", target=">= 0.95", ratio=recall,
                          passed=recall >= 0.95, note=f"{n_queries} held-out queries vs IndexFlatIP"))
        f = report.add(figure(f"search p50, {shards} shards {where}", tn, "ms", scale=1000,
                              note=f"p95 {p95(tn):.2f} ms; threads, one per shard, then merge_top_k"))
        ratio, (lo, hi) = summary(ratios)
        report.add(Figure(f"merge cost: {shards}-shard p50 / 1-shard p50", ratio, "x", (lo, hi),
                          note=f"{rounds} rounds of {n_queries} queries, alternating query by query; spread over rounds"))
        work = float(np.median(sharded.work) / np.median(single.work))
        report.add(Figure(f"search CPU: {shards} shards' summed CPU time / 1 shard's", work, "x",
                          note="efSearch is fixed: each shard visits about as many nodes as the whole index"))
        out[f"p50_{shards}"], out[f"ratio_{shards}"] = f.median, ratio
        sharded.close()
        del many, sharded  # at most two configurations alive
    f = report.add(figure(f"search p50, 1 shard {where}", one_samples, "ms", scale=1000,
                          note=f"p95 {p95(one_samples):.2f} ms; both pairs' rounds"))
    out["p50_1"] = f.median
    single.close()
    return out


# -- one extra Flow hop (the shard head's merger), optional ------------------------------
HOP_FLOWS = {
    "1 executor": "executors:\n  - name: indexer\n    uses: Noop\n    py_modules: [{mod}]\n",
    "2 shards + merger": ("executors:\n  - name: indexer\n    uses: Noop\n    py_modules: [{mod}]\n    shards: 2\n"
                          "    polling: ALL\n    uses_after: Noop\n"),
}


def hop_figures(report: Report, repeats: int = 200, rounds: int = 2) -> Optional[dict]:
    """p50 of a no-op /search through 1 executor vs the same executor as 2 shards with a merger."""
    from tests.harness import ROOT, Server, free_port, http_post

    samples = {name: [] for name in HOP_FLOWS}
    mod = ROOT / "bench" / "noop" / "executors.py"
    with tempfile.TemporaryDirectory(prefix="crossmodal-hop-") as tmp:
        for r in range(rounds):
            for name, body in (HOP_FLOWS.items() if r % 2 == 0 else reversed(HOP_FLOWS.items())):
                grpc_port, http_port = free_port(), free_port()
                spec = Path(tmp) / "flow.yml"
                spec.write_text(f"jtype: Flow\nwith:\n  protocol: [grpc, http]\n  port: [{grpc_port}, {http_port}]\n"
                                f"  host: 127.0.0.1\n" + body.format(mod=mod))
                serve = f"from jina import Flow; Flow.load_config({str(spec)!r}).__enter__().block()"
                with Server(Path(tmp) / "ws", grpc_port, http_port, command=[sys.executable, "-c", serve],
                            ready="/search") as server:
                    payload = [{"id": "q", "text": "two red circles"}]
                    for i in range(repeats + 10):
                        start = time.perf_counter()
                        status, _ = http_post(server.http_port, "/search", payload, {"k": 10})
                        if status != 200:
                            raise RuntimeError(f"no-op /search answered {status} ({name})")
                        if i >= 10:
                            samples[name].append(time.perf_counter() - start)
    one = report.add(figure("no-op /search p50 over HTTP, 1 executor", samples["1 executor"], "ms", scale=1000))
    two = report.add(figure("no-op /search p50 over HTTP, 2 shards + uses_after merger",
                            samples["2 shards + merger"], "ms", scale=1000))
    report.add(Figure("extra Flow hop of the shard head and merger", two.median - one.median, "ms",
                      note=f"{rounds} Flow starts each, alternating; {repeats} requests each"))
    return {"hop_ms": two.median - one.median}


# -- image-encoder replicas through app.py -t index ------------------------------------------
REPLICA_MODEL = ("demo-clip", "none")  # the shipped demo architecture; random weights cost the same


def has_replicas_flag() -> bool:
    from tests.harness import run_app

    return "--replicas" in run_app("-h").stdout


def replica_figures(report: Report, images: int, rounds: int) -> Optional[dict]:
    """Indexing rate (``app.py``'s own docs/s, Flow start excluded) with 1 and 2 replicas, in turns."""
    from bench.encoders import sample_images
    from tests.harness import run_app

    if not has_replicas_flag():
        print("replicas: skipped, app.py has no --replicas flag yet (issue 16 adds it)", flush=True)
        return None
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="crossmodal-replicas-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, blob in enumerate(sample_images(images, seed=7)):
            (folder / f"{i:05d}.jpg").write_bytes(blob)
        for r in tqdm(range(rounds), desc="replica rounds", unit="round"):
            for m in ((1, 2) if r % 2 == 0 else (2, 1)):
                done = run_app("-t", "index", "--data", str(folder), "--workspace", str(Path(tmp) / f"ws-{r}-{m}"),
                               "--model", REPLICA_MODEL[0], "--pretrained", REPLICA_MODEL[1],
                               "--replicas", str(m), timeout=1800)
                found = re.search(r"indexed (\d+), .*\(([\d.]+) docs/s\)", done.stdout)
                if done.returncode or not found or int(found.group(1)) != images:
                    raise RuntimeError(f"app.py -t index --replicas {m} failed:\n{done.stdout[-1500:]}"
                                       f"{done.stderr[-1500:]}")
                rates[m].append(float(found.group(2)))
    setup = f"{images} JPEGs, {REPLICA_MODEL[0]}, {rounds} runs each, alternating"
    one = report.add(figure("app.py -t index, 1 image-encoder replica", rates[1], "img/s", note=setup))
    two = report.add(figure("app.py -t index, 2 image-encoder replicas", rates[2], "img/s", note=setup))
    report.add(Figure("2 replicas / 1 replica indexing rate", two.median / one.median, "x",
                      note="2 shared cores: no gain expected"))
    return {"rate_1": one.median, "rate_2": two.median}


def run(report: Report, quick: bool, vectors_n: Optional[int] = None, queries: Optional[int] = None,
        search: bool = True, replicas: bool = True, hop: bool = True) -> dict:
    n = vectors_n or (100_000 if quick else 1_000_000)
    out = {}
    started = time.time()
    if search:
        out["search"] = search_figures(report, n, queries or (200 if quick else 1000), rounds=3 if quick else 5)
    if hop:
        out["hop"] = hop_figures(report, repeats=50 if quick else 200)
    if replicas:
        out["replicas"] = replica_figures(report, images=64 if quick else 512, rounds=2 if quick else 4)
    parts = []
    if out.get("search"):
        s = out["search"]
        parts.append(f"{n:,} vectors, p50 " + " / ".join(f"{c}: {s[f'p50_{c}']:.2f} ms" for c in SHARD_COUNTS)
                     + ", recall@10 " + " / ".join(f"{s[f'recall_{c}']:.3f}" for c in SHARD_COUNTS))
    if out.get("hop"):
        parts.append(f"shard head + merger hop {out['hop']['hop_ms']:.1f} ms")
    if out.get("replicas"):
        parts.append(f"index {out['replicas']['rate_1']:.0f} img/s with 1 replica, "
                     f"{out['replicas']['rate_2']:.0f} with 2")
    print(f"shards: {'; '.join(parts) or 'nothing measured'} in {time.time() - started:.0f}s", flush=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k vectors, 200 queries, fewer rounds and images")
    parser.add_argument("--vectors", type=int, help="collection size (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--queries", type=int, help="held-out queries (default 1000; 200 with --quick)")
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-replicas", action="store_true")
    parser.add_argument("--skip-hop", action="store_true", help="skip the Flow hop (2 no-op Flows, 2 starts each)")
    args = parser.parse_args()
    run(Report(), args.quick, args.vectors, args.queries, not args.skip_search, not args.skip_replicas,
        not args.skip_hop)
