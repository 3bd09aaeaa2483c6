"""Conversions between the wire documents (``schemas``) and the plain types the library uses.

Executors call these instead of copying fields themselves, so each mapping is
written once: content -> stored item, index match -> result document, planned
seed <-> seed document.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np
from docarray import DocList

from crossmodal.api.schemas import ContentDoc, MatchDoc, MatchGroup, Posts, SeedDoc
from crossmodal.api.validate import string_error, tags_error
from crossmodal.index.store import Item

if TYPE_CHECKING:
    from crossmodal.index.content import Match
    from crossmodal.recommend.core import Candidate, Seed


def item(doc: ContentDoc) -> Item:
    """What the store keeps of an encoded content document."""
    return Item(doc.id, doc.owner, doc.modality, np.asarray(doc.embedding, np.float32), doc.text, doc.uri,
                doc.tags or {}, doc.thumbnail)


def sendable(value: Optional[str]) -> Optional[str]:
    """A stored string as it can travel (rows written before validation may hold anything)."""
    if string_error("", value) is None:
        return value
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def match_doc(match: Match, thumbnail: Optional[str] = None, seed: Optional[Seed] = None) -> MatchDoc:
    """A result document; a stored row that breaks today's limits is still answered, with
    its unsendable parts replaced, so one old row can never fail every search that finds it."""
    row = match.row
    tags = row.tags if tags_error(row.tags) is None else {"invalid_tags": tags_error(row.tags)}
    return MatchDoc(
        id=sendable(row.id), owner=sendable(row.owner), modality=row.modality, score=match.score,
        text=sendable(row.text), uri=sendable(row.uri), tags=tags, thumbnail=thumbnail,
        seed=seed.key if seed else None,
        cluster=seed.cluster if seed else None,
    )


def match_docs(matches: Iterable[Match], thumbnails: dict[int, str]) -> DocList[MatchDoc]:
    return DocList[MatchDoc]([match_doc(m, thumbnails.get(m.row.vid)) for m in matches])


def pick_group(picks: dict) -> MatchGroup:
    """One query modality's picks (result modality -> [(candidate, seed)]) as a result group;
    each candidate's payload is the ``MatchDoc`` a shard answered (``candidate_docs``)."""
    group = MatchGroup()
    for modality, chosen in picks.items():
        setattr(group, f"{modality}_matches", DocList[MatchDoc]([
            c.payload.copy(update={"seed": seed.key, "cluster": seed.cluster,
                                   "embedding": None, "seed_index": None}) for c, seed in chosen]))
    return group


def candidate_docs(per_seed: Iterable[Iterable[Candidate]]) -> DocList[MatchDoc]:
    """A shard's recommendation candidates, flat, each knowing its seed and embedding."""
    return DocList[MatchDoc]([match_doc(c.payload).copy(update={"embedding": c.embedding, "seed_index": i})
                              for i, found in enumerate(per_seed) for c in found])


def candidates(docs: Optional[Iterable[MatchDoc]], n_seeds: int) -> list[list[Candidate]]:
    """``candidate_docs`` back into one list per seed (payload: the match document)."""
    from crossmodal.recommend.core import Candidate

    out: list[list[Candidate]] = [[] for _ in range(n_seeds)]
    for d in docs or []:
        if d.seed_index is None or not 0 <= d.seed_index < n_seeds:
            raise ValueError(f"candidate {d.id!r} names seed {d.seed_index!r} of {n_seeds}")
        out[d.seed_index].append(Candidate(d.id, d.modality, d.score, np.asarray(d.embedding, np.float32), d))
    return out


def post_docs(ids: Iterable[str], modalities: Iterable[str], embeddings: Iterable[np.ndarray],
              created_at: Optional[Iterable[float]] = None) -> Posts:
    """Items' embeddings packed for the wire (``Posts``)."""
    ids, modalities = list(ids), list(modalities)
    emb = np.array([np.asarray(e, np.float32) for e in embeddings], np.float32)
    times = np.zeros(len(ids)) if created_at is None else np.asarray(list(created_at), np.float64)
    return Posts(ids=ids, modalities=modalities, embeddings=emb, created_at=times)


def posts(packed: Optional[Posts], dim: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(ids, modalities, embeddings [n, dim], created_at) of carried posts (none: empty)."""
    if packed is None or not packed.ids:
        return [], [], np.zeros((0, dim), np.float32), np.zeros(0)
    n = len(packed.ids)
    return (list(packed.ids), list(packed.modalities), np.asarray(packed.embeddings, np.float32).reshape(n, dim),
            np.asarray(packed.created_at, np.float64).reshape(n))


def seed_docs(seeds: Iterable[Seed], ids: Optional[list[str]] = None) -> DocList[SeedDoc]:
    """Seeds as documents; with the history's ids, each names its post and members."""
    return DocList[SeedDoc]([SeedDoc(
        modality=s.modality, kind=s.kind, cluster=s.cluster, share=s.share, embedding=s.embedding, key=s.key,
        post_id=ids[s.post] if ids and s.post >= 0 else None,
        member_ids=[ids[m] for m in s.members] if ids else None) for s in seeds])


def seeds(docs: Optional[Iterable[SeedDoc]]) -> list[Seed]:
    from crossmodal.recommend.core import Seed

    return [Seed(s.modality, s.kind, s.cluster, s.share, np.asarray(s.embedding, np.float32)) for s in docs or []]
