"""The indexer's side: seeds become candidates through the FAISS indexes, then picks.

It reads the same store as the recommender, so seeds and candidates come from one
copy of the embeddings and cannot drift. Work is bounded whatever the history length
or the knobs (``settings.Limits``): candidates are capped per request, and novelty is
checked by searching a FAISS index of the user's posts (FAISS computes in blocks), not
with a candidates x history matrix.
"""
from __future__ import annotations

from typing import Callable

import faiss
import numpy as np

from crossmodal.api.params import RecommendParams
from crossmodal.index.content import ContentIndex
from crossmodal.recommend.core import Candidate, Seed, candidate_budget, select
from crossmodal.settings import LIMITS, MODALITIES, Limits

Picks = dict[str, dict[str, list[tuple[Candidate, Seed]]]]


def closest_own_post(index: ContentIndex, username: str) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """(rows -> best cosine to any post of the user, number of posts), both modalities.

    The user's embeddings are read chunk by chunk into a flat inner-product index:
    4 bytes x dim per post, the only memory that grows with the history.
    """
    own = faiss.IndexFlatIP(index.config.dim)
    for modality in MODALITIES:
        for _, vectors in index.store.iter_owner_embeddings(username, modality):
            own.add(np.ascontiguousarray(vectors, np.float32))

    def closest(rows: np.ndarray) -> np.ndarray:
        if own.ntotal == 0:
            return np.full(len(rows), -1.0, np.float32)
        scores, _ = own.search(np.ascontiguousarray(rows, np.float32), 1)
        return scores[:, 0]

    return closest, own.ntotal


def seed_candidates(index: ContentIndex, seed: Seed, params: RecommendParams, n_history: int,
                    max_budget: int) -> list[Candidate]:
    """Both modalities' results around one seed, the user's own posts excluded."""
    budget = candidate_budget(seed, params, n_history, max_budget=max_budget)
    found = []
    for modality in MODALITIES:
        found.extend(index.search(seed.embedding[None, :], modality, budget, params.username)[0])
    vectors = index.store.embeddings_of([m.row.vid for m in found])
    found.sort(key=lambda m: -m.score)
    return [Candidate(m.row.id, m.row.modality, m.score, vectors[m.row.vid], payload=m)
            for m in found if m.row.vid in vectors]


def recommend(index: ContentIndex, seeds: list[Seed], params: RecommendParams, limits: Limits = LIMITS) -> Picks:
    """query modality -> result modality -> picks, for the seeds the recommender planned.

    At most ``max_recommend_candidates`` candidates are fetched in all (shared by the
    seeds and searched modalities); near-duplicates of the user's posts come out of
    that pool, so a long history asks for at most ``max_recommend_history`` extra each.
    """
    closest, n_history = closest_own_post(index, params.username)
    per_search = max(1, limits.max_recommend_candidates // max(1, len(seeds) * len(MODALITIES)))
    n_extra = min(n_history, limits.max_recommend_history)
    out = {}
    for query_modality in MODALITIES:
        group = [s for s in seeds if s.modality == query_modality]
        candidates = [seed_candidates(index, s, params, n_extra, per_search) for s in group]
        out[query_modality] = select(group, candidates, closest, params) if group else {
            m: [] for m in MODALITIES}
    return out
