"""Glue between the pure recommender (``recommend.py``) and the store and index.

The recommender executor plans seeds from the user's history read from the store;
the indexer turns seeds into candidates with its FAISS indexes and the same store.
Both read the one copy of the embeddings, so nothing can drift.
"""
from __future__ import annotations

import numpy as np

from crossmodal.content_index import ContentIndex
from crossmodal.recommend import Candidate, RecommendParams, Seed, candidate_budget, plan_seeds, select
from crossmodal.schemas import MODALITIES
from crossmodal.store import Store


def plan_user_seeds(store: Store, params: RecommendParams) -> list[Seed]:
    """Seeds for every modality the user has posted in (empty: no history)."""
    seeds = []
    for modality in MODALITIES:
        history = store.history(params.username, modality)
        if history.ids:
            seeds.extend(plan_seeds(history.embeddings, history.created_at, modality, params))
    return seeds


def history_matrix(store: Store, username: str) -> np.ndarray:
    """Every embedding the user posted, both modalities, for the novelty filter."""
    parts = [store.history(username, m).embeddings for m in MODALITIES]
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


def recommend(index: ContentIndex, seeds: list[Seed], params: RecommendParams
              ) -> dict[str, dict[str, list[tuple[Candidate, Seed]]]]:
    """query modality -> result modality -> picks, for the seeds the recommender planned."""
    history = history_matrix(index.store, params.username)
    out = {}
    for query_modality in MODALITIES:
        group = [s for s in seeds if s.modality == query_modality]
        candidates = [seed_candidates(index, s, params, len(history)) for s in group]
        out[query_modality] = select(group, candidates, history, params) if group else {
            m: [] for m in MODALITIES}
    return out
