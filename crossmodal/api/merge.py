"""One answer from the answers of every indexer shard (Jina polls them ALL).

Each function takes the shards' document lists, in shard order, and returns the
documents the client gets. The shards' merger executor (``uses_after``) maps each
endpoint onto one of them; a single indexer answers whole and needs none, except
``recommend_answer``, which it calls on its own candidates so both paths pick alike.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from docarray import DocList

from crossmodal.api import convert
from crossmodal.api.params import RecommendParams
from crossmodal.api.schemas import ContentDoc, MatchDoc
from crossmodal.index.shards import merge_top_k, shard_of
from crossmodal.recommend.pick import merge_candidates, pick
from crossmodal.settings import LIMITS, MODALITIES

Shards = Sequence[DocList[ContentDoc]]


class ShardUnavailable(RuntimeError):
    """A shard did not answer: Jina's head goes on with the others, but an answer without a
    shard's part would be silently incomplete (a search missing results, a post not stored)."""


def check_shards(shards: Shards, expected: int) -> Shards:
    """Every shard answered, or ``ShardUnavailable`` naming the ones that did not (each shard
    marks its documents with its number). Shards that answered with an error (a bad parameter)
    left their documents unmarked: their answers pass through and Jina reports their error.
    Clears the marks."""
    if len(shards) < expected and any(len(docs) for docs in shards):
        answered = {d.shard for docs in shards for d in docs}
        missing = sorted(set(range(expected)) - answered) or f"{expected - len(shards)} of them"
        raise ShardUnavailable(f"indexer shard(s) {missing} of {expected} did not answer (down or unreachable): "
                               "nothing changed on them, while the other shards applied their part of an /index "
                               "or /delete; the request is safe to repeat once they are back")
    for docs in shards:
        for d in docs:
            d.shard = None
    return shards


def _aligned(shards: Shards) -> list[tuple[ContentDoc, ...]]:
    """The shards' copies of each request document, position by position."""
    sizes = {len(docs) for docs in shards}
    if len(sizes) != 1:
        raise ValueError(f"shards answered different numbers of documents: {[len(d) for d in shards]}")
    rows = list(zip(*shards))
    for copies in rows:
        if len({c.id for c in copies}) != 1:
            raise ValueError(f"shards answered different documents at one position: {[c.id for c in copies]}")
    return rows


def owned_answers(shards: Shards) -> DocList[ContentDoc]:
    """/index, /delete, /items: each document as the shard that owns its id answered it
    (Jina hands the answers over in shard order; the others left the document untouched)."""
    return DocList[ContentDoc]([copies[shard_of(copies[0].id or "", len(copies))] for copies in _aligned(shards)])


def search_answers(shards: Shards, k: int, thumbnail_cap: int = LIMITS.max_thumbnails_per_response
                   ) -> DocList[ContentDoc]:
    """/search, /refine: each query's best k per modality over all shards."""
    out, thumbnails = [], 0
    for copies in _aligned(shards):
        doc = copies[0]
        for modality in MODALITIES:
            lists = [getattr(c, f"{modality}_matches") or [] for c in copies]
            if any(getattr(c, f"{modality}_matches") is not None for c in copies):
                merged = merge_top_k(lists, k, lambda m: m.score)
                for m in merged:  # the cap holds for the whole response, as on one shard
                    if m.thumbnail is not None:
                        thumbnails += 1
                        m.thumbnail = m.thumbnail if thumbnails <= thumbnail_cap else None
                setattr(doc, f"{modality}_matches", DocList[MatchDoc](merged))
        out.append(doc)
    return DocList[ContentDoc](out)


def stats_answer(shards: Shards) -> DocList[ContentDoc]:
    """/stats: counts summed, each shard listed; owners counted once across shards."""
    tags = [dict(docs[0].tags or {}) for docs in shards if len(docs)]
    names = [set(t.pop("owner_names", None) or []) for t in tags]
    total = dict(tags[0])
    total["count"] = {m: sum(int(t["count"][m]) for t in tags) for m in MODALITIES}
    total["total"] = sum(int(t["total"]) for t in tags)
    total["owners"] = len(set().union(*names)) if all(t.get("owners_listed") for t in tags) else max(
        int(t["owners"]) for t in tags)  # a lower bound when a shard had too many to list
    total["shards"] = [{"shard": i, "count": t["count"], "total": t["total"], "owners": t["owners"]}
                       for i, t in enumerate(tags)]
    total.pop("owners_listed", None)
    return DocList[ContentDoc]([ContentDoc(id="stats", status="ok", tags=total)])


def _joined(packed: list, dim: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Several shards' packed posts as one (ids, modalities, embeddings, created_at)."""
    parts = [convert.posts(p, dim) for p in packed]
    return ([i for p in parts for i in p[0]], [m for p in parts for m in p[1]],
            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))


def posts_answer(shards: Shards, dim: int, limit: int = LIMITS.max_recommend_history) -> DocList[ContentDoc]:
    """/history, /labels: every shard's posts together (oldest first, the ``limit`` most recent
    per modality, as one store would give them), and their samples together."""
    out = []
    for copies in _aligned(shards):
        doc = copies[0]
        ids, modalities, emb, times = _joined([c.posts for c in copies], dim)
        order = sorted(range(len(ids)), key=lambda r: (times[r], ids[r]))
        kept = sorted((r for m in MODALITIES for r in [r for r in order if modalities[r] == m][-limit:]),
                      key=lambda r: (times[r], ids[r]))
        doc.posts = convert.post_docs([ids[r] for r in kept], [modalities[r] for r in kept], emb[kept], times[kept])
        if any(c.sample is not None for c in copies):
            ids, modalities, emb, _ = _joined([c.sample for c in copies], dim)
            doc.sample = convert.post_docs(ids, modalities, emb)
        out.append(doc)
    return DocList[ContentDoc](out)


def recommend_answer(shards: Shards, params: RecommendParams, dim: int) -> DocList[ContentDoc]:
    """/recommend: every shard's candidates for each seed, merged and picked as one index would."""
    out = []
    for copies in _aligned(shards):
        doc = copies[0]
        seeds = convert.seeds(doc.seeds)
        if seeds:
            _, _, history, _ = convert.posts(doc.posts, dim)
            per_shard = [convert.candidates(c.candidates, len(seeds)) for c in copies]
            merged = merge_candidates(per_shard, seeds, params, len(history))
            picks = pick(seeds, merged, history, params)
            doc.from_text = convert.pick_group(picks["text"])
            doc.from_image = convert.pick_group(picks["image"])
        for seed in doc.seeds or []:
            seed.embedding = None  # the seeds stay: the page names each interest by them
        doc.posts = doc.candidates = None
        doc.status = "ok"
        out.append(doc)
    return DocList[ContentDoc](out)

