"""The indexer's side of ``/refine``: marked ids -> a direction -> the same FAISS search as ``/search``."""
from __future__ import annotations

import numpy as np

from crossmodal.api.params import RefineParams
from crossmodal.api.validate import RequestError
from crossmodal.feedback.core import Direction, linear, rocchio
from crossmodal.index.content import ContentIndex, Match


def _labels(index: ContentIndex, params: RefineParams) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Positive and negative embeddings and the vids of every labelled item."""
    if not params.positive and not params.negative:
        raise RequestError("parameter 'positive': no marks given (and none in 'negative'); mark at least one result")
    both = sorted(set(params.positive) & set(params.negative))
    if both:
        raise RequestError(f"parameter 'negative': also in 'positive': {both[:5]!r}")
    found = index.store.embeddings_by_id([*params.positive, *params.negative])
    for name in ("positive", "negative"):
        unknown = [i for i in getattr(params, name) if i not in found]
        if unknown:
            raise RequestError(f"parameter {name!r}: unknown id(s) {unknown[:5]!r} (deleted, or never indexed)")
    dim = index.config.dim
    rows = {name: np.array([found[i][1] for i in getattr(params, name)], np.float32).reshape(-1, dim)
            for name in ("positive", "negative")}
    return rows["positive"], rows["negative"], {vid for vid, _ in found.values()}


def direction(index: ContentIndex, query: np.ndarray, params: RefineParams) -> tuple[Direction, set[int], dict]:
    """The direction to search with, the labelled vids to hide, and what was used (for the response)."""
    positives, negatives, labelled = _labels(index, params)
    used = {"method": params.method, "positive": len(positives), "negative": len(negatives), "weak_negatives": 0}
    try:
        if params.method == "rocchio":
            return rocchio(query, positives, negatives, params.alpha, params.beta, params.gamma), labelled, used
        weak = index.store.sample_embeddings(params.weak_negatives, params.seed) if not len(negatives) else np.zeros(0)
        used["weak_negatives"] = len(weak)
        return linear(query, positives, negatives, weak, params.c), labelled, used
    except ValueError as err:  # the marks cannot make a direction: the client's to change
        raise RequestError(str(err)) from None


def refine(index: ContentIndex, query: np.ndarray, params: RefineParams) -> tuple[dict[str, list[Match]], dict]:
    """Top-k per modality for the refined direction; labelled items never come back (seen already)."""
    found, labelled, used = direction(index, np.asarray(query, np.float32), params)
    out = {}
    for modality in params.modalities:
        [matches] = index.search(found.w[None, :], modality, params.k + len(labelled), params.username)
        out[modality] = [Match(m.row, m.score + found.b) for m in matches if m.row.vid not in labelled][: params.k]
    return out, used
