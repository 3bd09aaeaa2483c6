"""The indexer's side: seeds become candidates through the FAISS indexes, then picks.

Split in two so that a sharded indexer gives the same picks as a single one: each shard
finds every seed's candidates in its own part of the collection (``shard_candidates``),
and whoever sees all shards' answers (the shards' merger, or the single indexer itself)
keeps each seed's best ``candidate_budget`` per modality (``merge_candidates``), which is
exactly what one index holding everything would have found, then picks (``pick``).
Work is bounded whatever the history length or the knobs (``settings.Limits``).
Novelty is checked against the user's history as the request carries it (gathered from
every shard by the gateway), through a flat FAISS index, never a candidates x history matrix.
"""
from __future__ import annotations

from typing import Callable, Sequence

import faiss
import numpy as np

from crossmodal.api.params import RecommendParams
from crossmodal.index.content import ContentIndex
from crossmodal.index.shards import merge_top_k
from crossmodal.recommend.core import Candidate, Seed, candidate_budget, select
from crossmodal.settings import LIMITS, MODALITIES, Limits

Picks = dict[str, dict[str, list[tuple[Candidate, Seed]]]]


def closest_to(history: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """rows -> best cosine to any of the user's posts (-1 with none), through a flat index."""
    own = faiss.IndexFlatIP(history.shape[1]) if history.size else None
    if own is not None:
        own.add(np.ascontiguousarray(history, np.float32))

    def closest(rows: np.ndarray) -> np.ndarray:
        if own is None:
            return np.full(len(rows), -1.0, np.float32)
        scores, _ = own.search(np.ascontiguousarray(rows, np.float32), 1)
        return scores[:, 0]

    return closest


def budgets(seeds: Sequence[Seed], params: RecommendParams, n_history: int, limits: Limits = LIMITS) -> list[int]:
    """Results fetched per searched modality for each seed: at most ``max_recommend_candidates``
    in all; near-duplicates of the user's posts come out of that pool, so a long history
    asks for at most ``max_recommend_history`` extra each."""
    per_search = max(1, limits.max_recommend_candidates // max(1, len(seeds) * len(MODALITIES)))
    n_extra = min(n_history, limits.max_recommend_history)
    return [candidate_budget(s, params, n_extra, max_budget=per_search) for s in seeds]


def shard_candidates(index: ContentIndex, seeds: Sequence[Seed], params: RecommendParams, n_history: int,
                     limits: Limits = LIMITS) -> list[list[Candidate]]:
    """Each seed's results in this index, both modalities, the user's own posts excluded."""
    out = []
    for seed, budget in zip(seeds, budgets(seeds, params, n_history, limits)):
        found = []
        for modality in MODALITIES:
            found.extend(index.search(seed.embedding[None, :], modality, budget, params.username)[0])
        vectors = index.store.embeddings_of([m.row.vid for m in found])
        out.append([Candidate(m.row.id, m.row.modality, m.score, vectors[m.row.vid], payload=m)
                    for m in found if m.row.vid in vectors])
    return out


def merge_candidates(per_shard: Sequence[list[list[Candidate]]], seeds: Sequence[Seed], params: RecommendParams,
                     n_history: int, limits: Limits = LIMITS) -> list[list[Candidate]]:
    """Each seed's candidates over all shards: its best ``budget`` per modality, best first."""
    merged = []
    for i, budget in enumerate(budgets(seeds, params, n_history, limits)):
        seed_found = []
        for modality in MODALITIES:
            lists = [[c for c in shard[i] if c.modality == modality] for shard in per_shard]
            seed_found.extend(merge_top_k(lists, budget, lambda c: c.score))
        seed_found.sort(key=lambda c: -c.score)
        merged.append(seed_found)
    return merged


def pick(seeds: Sequence[Seed], candidates: Sequence[list[Candidate]], history: np.ndarray,
         params: RecommendParams) -> Picks:
    """query modality -> result modality -> picks, seeds of each query modality chosen together."""
    closest = closest_to(history)
    out = {}
    for query_modality in MODALITIES:
        group = [i for i, s in enumerate(seeds) if s.modality == query_modality]
        out[query_modality] = select([seeds[i] for i in group], [candidates[i] for i in group], closest, params
                                     ) if group else {m: [] for m in MODALITIES}
    return out
