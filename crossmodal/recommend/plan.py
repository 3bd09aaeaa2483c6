"""The recommender's side: a user's history, read from the store, becomes seeds.

Imports the store only (SQLite + numpy): the recommender process never loads FAISS.
"""
from __future__ import annotations

from crossmodal.api.params import RecommendParams
from crossmodal.index.store import Store
from crossmodal.recommend.core import Seed, plan_seeds
from crossmodal.settings import LIMITS, MODALITIES


def plan_user_seeds(store: Store, params: RecommendParams) -> list[Seed]:
    """Seeds for every modality the user has posted in (empty: no history)."""
    seeds = []
    for modality in MODALITIES:
        history = store.history(params.username, modality, limit=LIMITS.max_recommend_history)
        if history.ids:
            seeds.extend(plan_seeds(history.embeddings, history.created_at, modality, params,
                                    max_history=LIMITS.max_recommend_history))
    return seeds
