"""The indexer's side of ``/refine``: marked ids -> a direction -> the same FAISS search as ``/search``.

CLIP puts texts and images in one space but in two separate regions (the "modality gap"):
a text query among image marks differs from them mostly by being a text. Every embedding
is therefore taken relative to the centre of its modality (estimated from a random sample
of the collection) before the direction is fitted; within one modality that shift is a
constant, so the search is still an inner product with ``w`` and the score
``w . (x - centre) + b``.
"""
from __future__ import annotations

import numpy as np

from crossmodal.api.params import RefineParams
from crossmodal.api.validate import RequestError
from crossmodal.feedback.core import Direction, linear, rocchio
from crossmodal.index.content import ContentIndex, Match
from crossmodal.settings import MODALITIES

CENTRE_SAMPLE = 512  # items drawn to estimate each modality's centre


def _labels(index: ContentIndex, params: RefineParams, centres: dict[str, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """Centred positive and negative embeddings and the vids of every labelled item."""
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
    rows = {name: np.array([found[i][2] - centres[found[i][1]] for i in getattr(params, name)],
                           np.float32).reshape(-1, dim) for name in ("positive", "negative")}
    return rows["positive"], rows["negative"], {vid for vid, _, _ in found.values()}


def _sample(index: ContentIndex, params: RefineParams) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each modality's centre, and the centred random items that serve as weak negatives."""
    modalities, vectors = index.store.sample_embeddings(max(CENTRE_SAMPLE, params.weak_negatives), params.seed)
    dim, kinds = index.config.dim, np.array(modalities)
    centres = {m: vectors[kinds == m].mean(axis=0) if (kinds == m).any() else np.zeros(dim, np.float32)
               for m in MODALITIES}
    centred = np.array([v - centres[m] for m, v in zip(modalities, vectors)], np.float32).reshape(-1, dim)
    return centres, centred[: params.weak_negatives]


def direction(index: ContentIndex, query: np.ndarray, query_modality: str, params: RefineParams
              ) -> tuple[Direction, dict[str, float], set[int], dict]:
    """The direction to search with, the score offset per modality, the labelled vids to hide,
    and what was used (for the response)."""
    centres, weak = _sample(index, params)
    positives, negatives, labelled = _labels(index, params, centres)
    query = query - centres[query_modality]
    used = {"method": params.method, "positive": len(positives), "negative": len(negatives), "weak_negatives": 0}
    try:
        if params.method == "rocchio":
            found = rocchio(query, positives, negatives, params.alpha, params.beta, params.gamma)
        else:
            weak = weak if not len(negatives) else np.zeros((0, len(query)), np.float32)
            used["weak_negatives"] = len(weak)
            found = linear(query, positives, negatives, weak, params.c)
    except ValueError as err:  # the marks cannot make a direction: the client's to change
        raise RequestError(str(err)) from None
    offsets = {m: found.b - float(found.w @ centres[m]) for m in MODALITIES}
    return found, offsets, labelled, used


def refine(index: ContentIndex, query: np.ndarray, params: RefineParams, query_modality: str = "text"
           ) -> tuple[dict[str, list[Match]], dict]:
    """Top-k per modality for the refined direction; labelled items never come back (seen already)."""
    found, offsets, labelled, used = direction(index, np.asarray(query, np.float32), query_modality, params)
    out = {}
    for modality in params.modalities:
        [matches] = index.search(found.w[None, :], modality, params.k + len(labelled), params.username)
        out[modality] = [Match(m.row, m.score + offsets[modality])
                         for m in matches if m.row.vid not in labelled][: params.k]
    return out, used
