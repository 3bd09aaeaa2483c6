"""The indexer's side: seeds become candidates through the FAISS indexes, then picks.

It reads the same store as the recommender, so seeds and candidates come from one
copy of the embeddings and cannot drift.
"""
from __future__ import annotations

import numpy as np

from crossmodal.api.params import RecommendParams
from crossmodal.index.content import ContentIndex
from crossmodal.recommend.core import Candidate, Seed, candidate_budget, select
from crossmodal.settings import MODALITIES

Picks = dict[str, dict[str, list[tuple[Candidate, Seed]]]]


def history_matrix(index: ContentIndex, username: str) -> np.ndarray:
    """Every embedding the user posted, both modalities, for the novelty filter."""
    parts = [index.store.history(username, m).embeddings for m in MODALITIES]
    parts = [p for p in parts if p.size]
    return np.vstack(parts) if parts else np.zeros((0, 1), np.float32)


def seed_candidates(index: ContentIndex, seed: Seed, params: RecommendParams, n_history: int
                    ) -> list[Candidate]:
    """Both modalities' results around one seed, the user's own posts excluded."""
    budget = candidate_budget(seed, params, n_history)
    found = []
    for modality in MODALITIES:
        found.extend(index.search(seed.embedding[None, :], modality, budget, params.username)[0])
    vectors = index.store.embeddings_of([m.row.vid for m in found])
    found.sort(key=lambda m: -m.score)
    return [Candidate(m.row.id, m.row.modality, m.score, vectors[m.row.vid], payload=m)
            for m in found if m.row.vid in vectors]


def recommend(index: ContentIndex, seeds: list[Seed], params: RecommendParams) -> Picks:
    """query modality -> result modality -> picks, for the seeds the recommender planned."""
    history = history_matrix(index, params.username)
    out = {}
    for query_modality in MODALITIES:
        group = [s for s in seeds if s.modality == query_modality]
        candidates = [seed_candidates(index, s, params, len(history)) for s in group]
        out[query_modality] = select(group, candidates, history, params) if group else {
            m: [] for m in MODALITIES}
    return out
