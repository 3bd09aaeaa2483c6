"""Vector search: Flat vs HNSW latency, recall@10 and memory, with and without owner exclusion.

Data is a normalised Gaussian mixture whose spread lies in a low-dimensional subspace,
like real embeddings (CLIP's intrinsic dimension is estimated in the tens). Uniform or
isotropic noise in 512 dimensions makes every neighbour about equally far: no ANN index
finds "the" ten nearest there, and no real data looks like that.
"""
import os
import tempfile
import time

import faiss
import numpy as np

from bench.common import Figure, Report, figure
from crossmodal.index.vectors import VectorIndex

DIM = 512


def clustered(n: int, seed: int = 0, centres: int = 1000, intrinsic: int = 32) -> np.ndarray:
    """Unit vectors around ``centres`` shared centres (fixed), varying in ``intrinsic`` dims."""
    basis = np.random.default_rng(12345)  # same centres and subspace for data and queries
    means = basis.normal(size=(centres, DIM)).astype(np.float32)
    directions = np.linalg.qr(basis.normal(size=(DIM, intrinsic)))[0].T.astype(np.float32)
    rng = np.random.default_rng(seed)
    spread = rng.normal(size=(n, intrinsic)).astype(np.float32) @ directions * np.sqrt(DIM / intrinsic)
    x = means[rng.integers(0, centres, n)] + 0.6 * spread + 0.05 * rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _bytes_on_disk(index: VectorIndex) -> int:
    with tempfile.NamedTemporaryFile() as f:
        faiss.write_index(index.index, f.name)
        return os.path.getsize(f.name)


def _measure(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, exclude) -> tuple[list, float]:
    samples, hits = [], 0
    for q, t in zip(queries, truth):
        start = time.perf_counter()
        _, vids = index.search(q[None, :], 10, exclude)
        samples.append(time.perf_counter() - start)
        hits += len(set(vids[0].tolist()) & set(t.tolist()))
    return samples, hits / (10 * len(queries))


def run(report: Report, quick: bool) -> dict:
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    out = {}
    for n in sizes:
        x = clustered(n)
        queries = clustered(100, seed=1)
        exclude = np.arange(0, n, max(n // 200, 1))[:200]  # an owner with 200 posts
        flat = VectorIndex.build(DIM, "Flat", [(np.arange(n), x)])
        start = time.time()
        hnsw = VectorIndex.build(DIM, "HNSW32", [(np.arange(n), x)])  # the product's defaults
        build_s = time.time() - start
        for label, excl in (("", None), (" excl. 200", exclude)):
            _, truth = flat.search(queries, 10, excl)
            flat_t, _ = _measure(flat, queries, truth, excl)
            hnsw_t, recall = _measure(hnsw, queries, truth, excl)
            f = report.add(figure(f"Flat p50 @ {n:,}{label}", flat_t, "ms", scale=1000))
            h = report.add(figure(f"HNSW32 p50 @ {n:,}{label}", hnsw_t, "ms", scale=1000))
            is_target = n == 1_000_000
            report.add(Figure(f"HNSW32 recall@10 @ {n:,}{label}", recall, "", target=">= 0.95" if is_target else "",
                              ratio=recall if is_target else None, passed=recall >= 0.95 if is_target else None))
            speedup = f.median / h.median
            report.add(Figure(f"HNSW32 speed-up over Flat @ {n:,}{label}", speedup, "x",
                              target=">= 20x" if is_target else "", ratio=speedup if is_target else None,
                              passed=speedup >= 20 if is_target else None))
            out[f"{n}{label}"] = {"flat_ms": f.median, "hnsw_ms": h.median, "recall": recall}
        for name, index in (("Flat", flat), ("HNSW32", hnsw)):
            report.add(Figure(f"{name} bytes per vector @ {n:,}", _bytes_on_disk(index) / n, "B"))
        report.add(Figure(f"HNSW32 build @ {n:,}", build_s, "s"))
    return out
