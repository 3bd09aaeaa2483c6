"""Conversions between the wire documents (``schemas``) and the plain types the library uses.

Executors call these instead of copying fields themselves, so each mapping is
written once: content -> stored item, index match -> result document, planned
seed <-> seed document.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np
from docarray import DocList

from crossmodal.api.schemas import ContentDoc, MatchDoc, MatchGroup, SeedDoc
from crossmodal.api.validate import string_error, tags_error
from crossmodal.index.store import Item

if TYPE_CHECKING:
    from crossmodal.index.content import Match
    from crossmodal.recommend.core import Seed
    from crossmodal.recommend.pick import Picks


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
        seed=f"{seed.modality}:{seed.kind}:{seed.cluster}" if seed else None,
        cluster=seed.cluster if seed else None,
    )


def match_docs(matches: Iterable[Match], thumbnails: dict[int, str]) -> DocList[MatchDoc]:
    return DocList[MatchDoc]([match_doc(m, thumbnails.get(m.row.vid)) for m in matches])


def pick_group(picks: dict, thumbnails: dict[int, str]) -> MatchGroup:
    """One query modality's picks (result modality -> [(candidate, seed)]) as a result group."""
    group = MatchGroup()
    for modality, chosen in picks.items():
        setattr(group, f"{modality}_matches", DocList[MatchDoc](
            [match_doc(c.payload, thumbnails.get(c.payload.row.vid), seed) for c, seed in chosen]))
    return group


def picked_matches(picks: Picks) -> list[Match]:
    return [c.payload for by_result in picks.values() for chosen in by_result.values() for c, _ in chosen]


def seed_docs(seeds: Iterable[Seed]) -> DocList[SeedDoc]:
    return DocList[SeedDoc]([SeedDoc(modality=s.modality, kind=s.kind, cluster=s.cluster, share=s.share,
                                     embedding=s.embedding) for s in seeds])


def seeds(docs: Optional[Iterable[SeedDoc]]) -> list[Seed]:
    from crossmodal.recommend.core import Seed

    return [Seed(s.modality, s.kind, s.cluster, s.share, np.asarray(s.embedding, np.float32)) for s in docs or []]
