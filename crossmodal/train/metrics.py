"""Ranking metrics with binary relevance, in plain numpy.

Each query is described by ``relevance``: a 0/1 vector over its ranked results
(best first), and ``n_relevant``: how many relevant items exist in the whole
collection. The latter is needed because a ranking may be cut at top-k and miss
relevant items: recall and average precision must count those as misses.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _check(relevance: np.ndarray, k: int | None = None) -> np.ndarray:
    rel = np.asarray(relevance, dtype=np.float64).ravel()
    if rel.size and not np.isin(rel, (0.0, 1.0)).all():
        raise ValueError(f"relevance: must be binary (0/1), got values {np.unique(rel)[:5]}")
    if k is not None and k < 1:
        raise ValueError(f"k: must be >= 1, got {k}")
    return rel


def precision_at_k(relevance: np.ndarray, k: int) -> float:
    """Fraction of the first ``k`` slots that are relevant; missing slots count as misses."""
    rel = _check(relevance, k)
    return float(rel[:k].sum() / k)


def recall_at_k(relevance: np.ndarray, k: int, n_relevant: int) -> float:
    """Fraction of all relevant items found in the first ``k``; 0 when nothing is relevant."""
    rel = _check(relevance, k)
    return float(rel[:k].sum() / n_relevant) if n_relevant > 0 else 0.0


def ndcg_at_k(relevance: np.ndarray, k: int, n_relevant: int) -> float:
    """Normalised DCG with log2 discounts; the ideal ranking puts ``n_relevant`` hits first."""
    rel = _check(relevance, k)[:k]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[: min(n_relevant, k)].sum()
    return float((rel * discounts[: rel.size]).sum() / ideal) if ideal > 0 else 0.0


def average_precision(relevance: np.ndarray, n_relevant: int) -> float:
    """Mean of precision at each relevant rank, over all ``n_relevant`` (unretrieved ones add 0)."""
    rel = _check(relevance)
    if n_relevant <= 0:
        return 0.0
    hits = np.cumsum(rel)
    precisions = hits / np.arange(1, rel.size + 1)
    return float((precisions * rel).sum() / n_relevant)


def summarize(ranked_relevance: Sequence[np.ndarray], n_relevant: Sequence[int],
              ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Mean P@k, R@k, nDCG@k over queries plus mAP (over the retrieved depth)."""
    if len(ranked_relevance) != len(n_relevant):
        raise ValueError(f"n_relevant: {len(n_relevant)} entries for {len(ranked_relevance)} queries")
    if not ranked_relevance:
        raise ValueError("ranked_relevance: no queries to summarize")
    out: dict = {"queries": len(ranked_relevance)}
    for k in ks:
        out[f"P@{k}"] = float(np.mean([precision_at_k(r, k) for r in ranked_relevance]))
        out[f"R@{k}"] = float(np.mean([recall_at_k(r, k, n) for r, n in zip(ranked_relevance, n_relevant)]))
        out[f"nDCG@{k}"] = float(np.mean([ndcg_at_k(r, k, n) for r, n in zip(ranked_relevance, n_relevant)]))
    out["mAP"] = float(np.mean([average_precision(r, n) for r, n in zip(ranked_relevance, n_relevant)]))
    return out
