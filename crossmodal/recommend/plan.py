"""The recommender's side: a user's history, as the request carries it, becomes seeds.

The gateway gathers the history from every indexer shard first (``/history``), so this
process reads no store: on several machines it could not reach the shards' files.
"""
from __future__ import annotations

import numpy as np

from crossmodal.api.params import RecommendParams
from crossmodal.recommend.core import Seed, plan_seeds
from crossmodal.settings import LIMITS, MODALITIES


def plan_user_seeds(modalities: list[str], embeddings: np.ndarray, created_at: np.ndarray,
                    params: RecommendParams) -> list[Seed]:
    """Seeds for every modality the user has posted in (empty: no history); posts oldest first.
    Each seed's ``post`` and ``members`` are rows of the whole history given here."""
    kinds = np.asarray(modalities)
    seeds = []
    for modality in MODALITIES:
        rows = np.flatnonzero(kinds == modality)
        if len(rows):
            for seed in plan_seeds(embeddings[rows], created_at[rows], modality, params,
                                   max_history=LIMITS.max_recommend_history):
                seed.post, seed.members = int(rows[seed.post]), tuple(int(rows[m]) for m in seed.members)
                seeds.append(seed)
    return seeds
