"""A FAISS index of one modality, keyed by the store's ``vid``s.

The index is derived data: it is rebuilt from the store whenever its saved copy
is missing or older than the store. Index types that cannot remove vectors
(HNSW) keep replaced vids as tombstones that every search excludes through the
same ID selector that excludes the requester's own posts, so a search always
returns k live results when k exist.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional

import faiss
import numpy as np

from crossmodal.settings import INDEX

TRAIN_POINTS_PER_CENTROID = 39  # FAISS warns below this
OMP_THREADS = faiss.omp_get_max_threads()  # FAISS's default team, read before any thread changes its own


@contextlib.contextmanager
def _one_thread_for_one_query(queries: int) -> Iterator[None]:
    """One query is scanned by the calling thread alone. FAISS splits a single query's scan over
    its OpenMP team, which here saved no time (the scan streams the vectors from memory) and
    cost the other core ~0.7 ms per text query while the gateway and encoder need it. Batches
    keep the team. The thread count is the calling thread's own (OpenMP), restored after."""
    if queries != 1 or OMP_THREADS == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(OMP_THREADS)


class IndexConfigError(ValueError):
    """An index factory string FAISS cannot build."""


def _make(factory: str, dim: int) -> faiss.Index:
    try:
        return faiss.index_factory(dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise IndexConfigError(f"index_factory: FAISS cannot build {factory!r} ({err})") from None


def _nlist(index: faiss.Index) -> int:
    ivf = faiss.try_extract_index_ivf(index)
    return ivf.nlist if ivf is not None else 1


class VectorIndex:
    """Cosine search over unit vectors with per-query ID exclusion."""

    def __init__(self, dim: int, factory: str = INDEX.factory, ef_search: int = INDEX.ef_search,
                 nprobe: int = INDEX.nprobe, ef_construction: int = INDEX.ef_construction):
        self.dim, self.factory = dim, factory
        self.ef_search, self.nprobe, self.ef_construction = ef_search, nprobe, ef_construction
        self.index = _make(factory, dim)
        self._configure()
        self.effective_factory = factory
        self.tombstones: set[int] = set()
        self._lock = threading.RLock()

    # -- building ---------------------------------------------------------------
    @classmethod
    def build(cls, dim: int, factory: str, chunks: Iterable[tuple[np.ndarray, np.ndarray]],
              **params) -> VectorIndex:
        """Build from (vids, vectors) chunks; untrainable-yet types fall back to Flat."""
        vids, vectors = [], []
        for chunk_vids, chunk_vectors in chunks:
            vids.append(chunk_vids)
            vectors.append(chunk_vectors)
        vids = np.concatenate(vids) if vids else np.zeros(0, np.int64)
        vectors = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        built = cls(dim, factory, **params)
        if not built.index.is_trained:
            if len(vectors) < TRAIN_POINTS_PER_CENTROID * _nlist(built.index):
                built.index, built.effective_factory = _make("Flat", dim), "Flat"
            else:
                built.index.train(vectors)
        built.add(vids, vectors)
        return built

    def _configure(self) -> None:
        inner = faiss.downcast_index(self.index.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efConstruction = self.ef_construction

    def add(self, vids: np.ndarray, vectors: np.ndarray) -> None:
        if len(vids):
            with self._lock:
                self.index.add_with_ids(np.ascontiguousarray(vectors, np.float32), vids.astype(np.int64))

    def remove(self, vids: Iterable[int]) -> None:
        vids = np.fromiter(vids, dtype=np.int64)
        if not len(vids):
            return
        with self._lock:
            try:
                self.index.remove_ids(faiss.IDSelectorBatch(vids))
            except RuntimeError:  # HNSW cannot remove: hide the vectors instead
                self.tombstones.update(int(v) for v in vids)

    def live_vids(self) -> np.ndarray:
        """The vids a search can return (tombstones excluded), sorted."""
        with self._lock:
            vids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        if self.tombstones:
            vids = vids[~np.isin(vids, np.fromiter(self.tombstones, np.int64))]
        return np.sort(vids)

    @property
    def size(self) -> int:
        """Live vectors (tombstones excluded)."""
        return self.index.ntotal - len(self.tombstones)

    # -- searching ----------------------------------------------------------------
    def _params(self, selector: Optional[faiss.IDSelector], k: int) -> Optional[faiss.SearchParameters]:
        inner = faiss.downcast_index(self.index.index)
        if isinstance(inner, faiss.IndexHNSW):
            return faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.ef_search, k))
        if faiss.try_extract_index_ivf(inner) is not None:
            return faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        return faiss.SearchParameters(sel=selector) if selector is not None else None

    def search(self, queries: np.ndarray, k: int, exclude: Optional[np.ndarray] = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, vids) per query, skipping ``exclude`` and tombstones; -1 pads."""
        with self._lock:
            hidden = list(self.tombstones)
            if exclude is not None and len(exclude):
                hidden.extend(int(v) for v in exclude)
            batch = faiss.IDSelectorBatch(np.array(hidden, dtype=np.int64)) if hidden else None
            selector = faiss.IDSelectorNot(batch) if batch is not None else None
            k = max(1, min(k, self.index.ntotal))
            with _one_thread_for_one_query(len(queries)):
                scores, vids = self.index.search(
                    np.ascontiguousarray(queries, np.float32), k, params=self._params(selector, k)
                )
        return scores, vids

    # -- persistence ----------------------------------------------------------------
    def save(self, path: Path, generation: int) -> None:
        """Atomically persist with the store generation it reflects (manifest written last)."""
        path = Path(path)
        manifest = path.with_suffix(".json")
        manifest.unlink(missing_ok=True)  # a crash mid-save leaves no manifest: rebuild
        with self._lock:
            faiss.write_index(self.index, str(path) + ".tmp")
            os.replace(str(path) + ".tmp", path)
            np.save(path.with_suffix(".tombstones.npy"), np.array(sorted(self.tombstones), np.int64))
            info = {"generation": generation, "factory": self.factory,
                    "effective_factory": self.effective_factory, "dim": self.dim}
        manifest.with_suffix(".tmp").write_text(json.dumps(info))
        os.replace(manifest.with_suffix(".tmp"), manifest)

    @classmethod
    def load(cls, path: Path, generation: int, dim: int, factory: str, **params) -> Optional[VectorIndex]:
        """The saved index if it matches this store generation and config, else None."""
        path = Path(path)
        manifest = path.with_suffix(".json")
        if not manifest.is_file() or not path.is_file():
            return None
        info = json.loads(manifest.read_text())
        if info != {**info, "generation": generation, "factory": factory, "dim": dim}:
            return None
        loaded = cls(dim, factory, **params)
        loaded.index = faiss.read_index(str(path))
        loaded._configure()
        loaded.effective_factory = info["effective_factory"]
        loaded.tombstones = set(np.load(path.with_suffix(".tombstones.npy"), allow_pickle=False).tolist())
        return loaded
