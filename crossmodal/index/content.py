"""The indexer's logic: a Store plus one VectorIndex per modality, kept in step.

Writes go to SQLite first (durable once committed), then to FAISS; on start the
FAISS copies are loaded only when they match the store's generation, otherwise
rebuilt from it, so a crash between the two never loses or resurrects content.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from crossmodal.index.store import Item, Row, Store, WorkspaceLock
from crossmodal.index.vectors import VectorIndex
from crossmodal.settings import INDEX, LIMITS, MODALITIES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexConfig:
    workspace: Path
    model: str  # the label recorded in the workspace
    dim: int
    factory: str = INDEX.factory
    ef_search: int = INDEX.ef_search  # HNSW/IVF knobs: see settings.IndexSettings
    nprobe: int = INDEX.nprobe
    ef_construction: int = INDEX.ef_construction
    rebuild_tombstone_ratio: float = INDEX.rebuild_tombstone_ratio


@dataclass
class Match:
    row: Row
    score: float


class ContentIndex:
    """Upsert, delete and owner-excluding search over texts and images."""

    def __init__(self, config: IndexConfig):
        self.config = config
        self._lock = WorkspaceLock(config.workspace)
        self._lock.acquire()
        try:
            self.store = Store(config.workspace)
            self.store.bind_model(config.model, config.dim)
            self._write_lock = threading.Lock()
            self.vectors = {m: self._open_vectors(m) for m in MODALITIES}
        except BaseException:
            self._lock.release()
            raise

    # -- lifecycle ------------------------------------------------------------------
    def _vector_path(self, modality: str) -> Path:
        return self.config.workspace / f"faiss-{modality}.index"

    def _vector_params(self) -> dict:
        return {"ef_search": self.config.ef_search, "nprobe": self.config.nprobe,
                "ef_construction": self.config.ef_construction}

    def _open_vectors(self, modality: str) -> VectorIndex:
        cfg = self.config
        loaded = VectorIndex.load(self._vector_path(modality), self.store.generation, cfg.dim,
                                  cfg.factory, **self._vector_params())
        if loaded is not None and np.array_equal(loaded.live_vids(), self.store.vids(modality)):
            return loaded
        if loaded is not None:  # same generation but other content: saved by a buggy or foreign writer
            log.warning("the saved %s FAISS index disagrees with the store: rebuilding it", modality)
        log.info("rebuilding the %s FAISS index from the store", modality)
        return VectorIndex.build(cfg.dim, cfg.factory, self.store.iter_embeddings(modality),
                                 **self._vector_params())

    def save(self) -> None:
        with self._write_lock:
            generation = self.store.generation
            for modality, vectors in self.vectors.items():
                vectors.save(self._vector_path(modality), generation)

    def close(self) -> None:
        try:
            self.save()
        finally:
            self.store.close()
            self._lock.release()

    # -- writes ---------------------------------------------------------------------
    def upsert(self, items: Sequence[Item], now: Optional[float] = None) -> list[str]:
        """Store then index; returns 'indexed' or 'updated' per item.

        An id given twice is stored once, as its last copy; the earlier copies answer
        'duplicate' (storing both would leave the first vector in FAISS with no row).
        """
        for item in items:
            if item.embedding.shape != (self.config.dim,):
                raise ValueError(f"embedding: shape {item.embedding.shape} != ({self.config.dim},)")
        last = {item.id: i for i, item in enumerate(items)}
        if len(last) < len(items):
            kept = sorted(last.values())
            statuses = dict(zip(kept, self.upsert([items[i] for i in kept], now)))
            return [statuses.get(i, "duplicate") for i in range(len(items))]
        with self._write_lock:
            results = self.store.upsert(items, now)
            for modality in MODALITIES:
                self.vectors[modality].remove(old.vid for _, old in results if old and old.modality == modality)
                picked = [(vid, item) for (vid, _), item in zip(results, items) if item.modality == modality]
                if picked:
                    self.vectors[modality].add(np.array([vid for vid, _ in picked], np.int64),
                                               np.vstack([item.embedding for _, item in picked]))
            self._compact_if_needed()
        return ["updated" if old else "indexed" for _, old in results]

    def delete(self, ids: Sequence[str]) -> list[str]:
        with self._write_lock:
            removed = self.store.delete(ids)
            for modality in MODALITIES:
                self.vectors[modality].remove(row.vid for row in removed if row and row.modality == modality)
            self._compact_if_needed()
        return ["deleted" if row else "not_found" for row in removed]

    def _compact_if_needed(self) -> None:
        """Rebuild an index whose tombstones have grown past the configured ratio."""
        for modality, vectors in self.vectors.items():
            if len(vectors.tombstones) > self.config.rebuild_tombstone_ratio * max(vectors.index.ntotal, 1):
                self.vectors[modality] = VectorIndex.build(
                    self.config.dim, self.config.factory, self.store.iter_embeddings(modality),
                    **self._vector_params())

    # -- reads ----------------------------------------------------------------------
    def search(self, queries: Sequence[np.ndarray], modality: str, k: int, exclude_owner: Optional[str] = None
               ) -> list[list[Match]]:
        """Top-k live matches of one modality per query, the owner's own items excluded."""
        vectors = self.vectors[modality]
        if vectors.size == 0 or not len(queries):
            return [[] for _ in range(len(queries))]
        queries = np.vstack([np.asarray(q, np.float32) for q in queries])
        exclude = self.store.owner_vids(exclude_owner, modality) if exclude_owner else None
        scores, vids = vectors.search(queries, k, exclude)
        rows = self.store.rows(np.unique(vids[vids >= 0]))
        return [
            [Match(rows[v], float(s)) for s, v in zip(qs, qv) if v >= 0 and v in rows][:k]
            for qs, qv in zip(scores, vids)
        ]

    def thumbnails(self, matches: Sequence[Match], limit: int = LIMITS.max_thumbnails_per_response
                   ) -> dict[int, str]:
        """Stored thumbnails (``data:`` URIs) of the first ``limit`` image matches, by vid:
        one response stays bounded whatever k and the number of queries."""
        return self.store.thumbnails([m.row.vid for m in matches if m.row.modality == "image"][:limit])

    def stats(self) -> dict:
        return {
            "count": {m: self.store.count(m) for m in MODALITIES},
            "total": self.store.count(),
            "owners": self.store.owner_count(),
            "model": self.config.model,
            "dim": self.config.dim,
            "index_type": self.config.factory,
            "effective_index_type": {m: v.effective_factory for m, v in self.vectors.items()},
        }
