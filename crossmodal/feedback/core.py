"""Labelled embeddings -> one direction to search with, as plain numpy / scikit-learn.

Both methods end in a vector ``w`` and an offset ``b`` whose score over the collection is
``w . x + b``: for unit vectors that is an inner-product search, which the FAISS indexes
already answer (top-k by ``w . x``, the same for every ``b``). CLIP-Branches (SIGIR 2024)
fits such a linear model on a person's marks; Rocchio (1971) moves the query instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Direction:
    w: np.ndarray  # float32 [d]
    b: float = 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _mean(rows: np.ndarray, dim: int) -> np.ndarray:
    return _unit(rows).mean(axis=0) if len(rows) else np.zeros(dim, np.float32)


def rocchio(query: np.ndarray, positives: np.ndarray, negatives: np.ndarray,
            alpha: float, beta: float, gamma: float) -> Direction:
    """The query moved towards the positives' mean and away from the negatives'; unit length,
    so the score stays a cosine."""
    query = _unit(query)
    moved = alpha * query + beta * _mean(positives, len(query)) - gamma * _mean(negatives, len(query))
    if not np.linalg.norm(moved) > 1e-6:
        raise ValueError("parameter 'negative': the labels cancel the query out; mark fewer negatives "
                         "or lower 'gamma'")
    return Direction(_unit(moved))


def linear(query: np.ndarray, positives: np.ndarray, negatives: np.ndarray, weak_negatives: np.ndarray,
           c: float) -> Direction:
    """A logistic regression fitted on the marks, the query counting as a positive.

    When the person marked no negatives, a random sample of the collection stands in as
    weak negatives (most of any collection is not what one is looking for). Classes are
    balanced, so a few marks of one kind are not drowned by the sample. The score is the
    classifier's decision value (log-odds of "relevant").
    """
    from sklearn.linear_model import LogisticRegression

    dim = len(query)
    pos = np.vstack([_unit(query)[None, :], _unit(positives.reshape(-1, dim))])
    neg = _unit(negatives.reshape(-1, dim)) if len(negatives) else _unit(weak_negatives.reshape(-1, dim))
    if not len(neg):
        raise ValueError("parameter 'negative': the collection is empty, nothing to contrast the marks with")
    x = np.vstack([pos, neg]).astype(np.float64)
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit(x, y)
    return Direction(model.coef_[0].astype(np.float32), float(model.intercept_[0]))
