"""The indexer's side of ``/refine``: marked ids -> a direction -> the same FAISS search as ``/search``.

CLIP puts texts and images in one space but in two separate regions (the "modality gap"):
a text query among image marks differs from them mostly by being a text. Every embedding
is therefore taken relative to the centre of its modality (estimated from a random sample
of the collection) before the direction is fitted; within one modality that shift is a
constant, so the search is still an inner product with ``w`` and the score
``w . (x - centre) + b``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from crossmodal.api.params import RefineParams
from crossmodal.api.validate import RequestError
from crossmodal.feedback.core import Direction, linear, rocchio
from crossmodal.index.content import ContentIndex, Match
from crossmodal.index.shards import shard_of
from crossmodal.settings import MODALITIES

CENTRE_SAMPLE = 512  # items drawn to estimate each modality's centre


@dataclass
class Marks:
    """What /refine needs from the stores: the marked items and a random sample of the
    collection. The gateway gathers it from every indexer shard first (``/labels``), so each
    shard fits the same direction whichever items it holds."""

    found: dict[str, tuple[str, np.ndarray]]  # marked id -> (modality, embedding), the stored ones
    sample_modalities: list[str]
    sample: np.ndarray  # [n, dim]


def gather_marks(index: ContentIndex, params: RefineParams, shard: int = 0, shards: int = 1) -> Marks:
    """This store's part of the marks: the marked items it owns and its share of the sample."""
    ids = [i for i in (*params.positive, *params.negative) if shard_of(i, shards) == shard]
    found = {i: (modality, emb) for i, (_, modality, emb) in index.store.embeddings_by_id(ids).items()}
    n = -(-max(CENTRE_SAMPLE, params.weak_negatives) // shards)
    modalities, vectors = index.store.sample_embeddings(n, params.seed + shard)
    return Marks(found, modalities, vectors.reshape(-1, index.config.dim))


def _shown(ids: list[str], n: int = 5, chars: int = 80) -> str:
    """A few of the offending ids for an error message, each cut short: a message never
    echoes a whole request back."""
    return repr([i if len(i) <= chars else f"{i[:chars]}…" for i in ids[:n]])


def _labels(marks: Marks, params: RefineParams, centres: dict[str, np.ndarray], dim: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Centred positive and negative embeddings."""
    if not params.positive and not params.negative:
        raise RequestError("parameter 'positive': no marks given (and none in 'negative'); mark at least one result")
    both = sorted(set(params.positive) & set(params.negative))
    if both:
        raise RequestError(f"parameter 'negative': also in 'positive': {_shown(both)}")
    for name in ("positive", "negative"):
        unknown = [i for i in getattr(params, name) if i not in marks.found]
        if unknown:
            raise RequestError(f"parameter {name!r}: unknown id(s) {_shown(unknown)} (deleted, or never indexed)")
    rows = {name: np.array([marks.found[i][1] - centres[marks.found[i][0]] for i in getattr(params, name)],
                           np.float32).reshape(-1, dim) for name in ("positive", "negative")}
    return rows["positive"], rows["negative"]


def _centres(marks: Marks, params: RefineParams, dim: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each modality's centre, and the centred random items that serve as weak negatives."""
    kinds, vectors = np.array(marks.sample_modalities), marks.sample
    centres = {m: vectors[kinds == m].mean(axis=0) if (kinds == m).any() else np.zeros(dim, np.float32)
               for m in MODALITIES}
    centred = np.array([v - centres[m] for m, v in zip(marks.sample_modalities, vectors)], np.float32).reshape(-1, dim)
    return centres, centred[: params.weak_negatives]


def direction(index: ContentIndex, query: np.ndarray, query_modality: str, params: RefineParams,
              marks: Optional[Marks] = None) -> tuple[Direction, dict[str, float], set[str], dict]:
    """The direction to search with, the score offset per modality, the marked ids to hide,
    and what was used (for the response). ``marks`` default to this index's own."""
    marks = marks if marks is not None else gather_marks(index, params)
    dim = index.config.dim
    centres, weak = _centres(marks, params, dim)
    positives, negatives = _labels(marks, params, centres, dim)
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
    return found, offsets, {*params.positive, *params.negative}, used


def refine(index: ContentIndex, query: np.ndarray, params: RefineParams, query_modality: str = "text",
           marks: Optional[Marks] = None) -> tuple[dict[str, list[Match]], dict]:
    """Top-k per modality for the refined direction; marked items never come back (seen already)."""
    found, offsets, labelled, used = direction(index, np.asarray(query, np.float32), query_modality, params, marks)
    out = {}
    for modality in params.modalities:
        [matches] = index.search(found.w[None, :], modality, params.k + len(labelled), params.username)
        out[modality] = [Match(m.row, m.score + offsets[modality])
                         for m in matches if m.row.id not in labelled][: params.k]
    return out, used
