"""Jina adapter: stores content with owners and answers owner-excluding searches."""

import base64
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from docarray import DocList
from jina import Executor, requests

from crossmodal import clip_model
from crossmodal.content_index import ContentIndex, IndexConfig, Match
from crossmodal.recommend import Seed, parse_recommend_params
from crossmodal.recommend_io import recommend
from crossmodal.params import ContentLimits, as_bool, content_error, mark_error, parse_search_params
from crossmodal.schemas import ContentDoc, MatchDoc, MatchGroup
from crossmodal.store import Item

log = logging.getLogger(__name__)


def _thumbnail_bytes(uri: Optional[str]) -> Optional[bytes]:
    return base64.b64decode(uri.partition(",")[2]) if uri else None


def _match_doc(match: Match, thumbnails: dict, seed: Optional[Seed] = None) -> MatchDoc:
    row = match.row
    thumb = thumbnails.get(row.vid)
    return MatchDoc(
        id=row.id, owner=row.owner, modality=row.modality, score=match.score, text=row.text,
        uri=row.uri, tags=row.tags,
        thumbnail="data:image/jpeg;base64," + base64.b64encode(thumb).decode() if thumb else None,
        seed=f"{seed.modality}:{seed.kind}:{seed.cluster}" if seed else None,
        cluster=seed.cluster if seed else None,
    )


class CrossmodalIndexer(Executor):
    """SQLite is the source of truth; one FAISS index per modality is derived from it."""

    def __init__(self, workspace_dir: str = "workspace", model: Optional[str] = None,
                 pretrained: Optional[str] = None, index_factory: str = "Flat",
                 ef_search: int = IndexConfig.ef_search, nprobe: int = IndexConfig.nprobe,
                 ef_construction: int = IndexConfig.ef_construction, max_text_chars: int = 10_000, **kwargs):
        super().__init__(**kwargs)
        spec = clip_model.resolve(model or None, pretrained or None)
        self.index = ContentIndex(IndexConfig(
            Path(workspace_dir), spec.label, clip_model.embed_dim(spec), index_factory, ef_search, nprobe,
            ef_construction=ef_construction,
        ))
        self.limits = ContentLimits(max_text_chars=max_text_chars)

    @requests(on="/index")
    def index_docs(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        ready = []
        for doc in docs:
            error = doc.error or content_error(doc, self.limits, encoded=True)
            if error is None and doc.embedding is None:
                error = "embedding: missing (no encoder handled this document)"
            if error:
                mark_error(doc, error)
                continue
            ready.append(doc)
        items = [Item(d.id, d.owner, d.modality, np.asarray(d.embedding, np.float32), d.text,
                      d.uri, d.tags or {}, _thumbnail_bytes(d.thumbnail)) for d in ready]
        for doc, status in zip(ready, self.index.upsert(items)):
            doc.status = status
        for doc in docs:
            doc.embedding = doc.thumbnail = doc.blob = None
        return docs

    @requests(on="/search")
    def search(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        params = parse_search_params(parameters)
        ready = [d for d in docs if d.error is None and d.embedding is not None]
        queries = np.vstack([np.asarray(d.embedding, np.float32) for d in ready]) if ready else None
        for modality in ("text", "image"):
            found = (self.index.search(queries, modality, params.k, params.username)
                     if queries is not None and modality in params.modalities else [[] for _ in ready])
            thumbs = {}
            if params.with_thumbnails and modality == "image":
                thumbs = self.index.store.thumbnails([m.row.vid for ms in found for m in ms])
            for doc, matches in zip(ready, found):
                setattr(doc, f"{modality}_matches", DocList[MatchDoc]([_match_doc(m, thumbs) for m in matches]))
        for doc in docs:
            if doc.error is None:
                doc.status = "ok"
            doc.embedding = doc.blob = None
        return docs

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        params = parse_recommend_params(parameters)
        with_thumbnails = as_bool(parameters, "with_thumbnails", False)
        for doc in docs:
            seeds = [Seed(s.modality, s.kind, s.cluster, s.share, np.asarray(s.embedding, np.float32))
                     for s in doc.seeds or []]
            picks = recommend(self.index, seeds, params) if seeds else {}
            doc.from_text = self._group(picks.get("text", {}), with_thumbnails)
            doc.from_image = self._group(picks.get("image", {}), with_thumbnails)
            doc.seeds, doc.status = None, "ok"
        return docs

    def _group(self, picks: dict, with_thumbnails: bool) -> MatchGroup:
        group = MatchGroup()
        for modality, chosen in picks.items():
            thumbs = {}
            if with_thumbnails and modality == "image":
                thumbs = self.index.store.thumbnails([c.payload.row.vid for c, _ in chosen])
            setattr(group, f"{modality}_matches",
                    DocList[MatchDoc]([_match_doc(c.payload, thumbs, seed) for c, seed in chosen]))
        return group

    @requests(on="/delete")
    def delete(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        for doc, status in zip(docs, self.index.delete([d.id for d in docs])):
            doc.status = status
        return docs

    @requests(on="/stats")
    def stats(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        return DocList[ContentDoc]([ContentDoc(id="stats", status="ok", tags=self.index.stats())])

    def close(self) -> None:
        self.index.close()
        super().close()
