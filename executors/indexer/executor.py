"""Jina adapter: stores content with owners and answers owner-excluding searches."""

from dataclasses import asdict
from pathlib import Path

from docarray import DocList
from jina import Executor, requests

from crossmodal.api import convert, identity
from crossmodal.api.params import parse_recommend_params, parse_refine_params, parse_search_params
from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import client_params, content_error, embedding_error, mark_error
from crossmodal.feedback.search import refine
from crossmodal.index.content import ContentIndex, IndexConfig
from crossmodal.model.calibration import Calibration
from crossmodal.recommend.pick import recommend
from crossmodal.serve.metrics import IndexMetrics
from crossmodal.settings import INDEX, MODALITIES


class CrossmodalIndexer(Executor):
    """SQLite is the source of truth; one FAISS index per modality is derived from it.

    ``model_label`` and ``embed_dim`` are what the Flow resolved once for the encoders:
    this process never loads the model.
    """

    def __init__(self, workspace_dir: str = "workspace", model_label: str = "", embed_dim: int = 0,
                 index_factory: str = INDEX.factory, ef_search: int = INDEX.ef_search,
                 nprobe: int = INDEX.nprobe, ef_construction: int = INDEX.ef_construction, auth: bool = False,
                 calibration: str = "", **kwargs):
        super().__init__(**kwargs)
        if not model_label or int(embed_dim) < 1:
            raise ValueError(f"model_label and embed_dim are required, got {model_label!r}, {embed_dim!r}")
        self.index = ContentIndex(IndexConfig(Path(workspace_dir), model_label, int(embed_dim), index_factory,
                                              ef_search, nprobe, ef_construction=ef_construction))
        self.auth = identity.flag(auth)
        self.calibration = Calibration.from_json(calibration)  # the model's thresholds
        self.metrics = IndexMetrics.of(self.runtime_args)
        self.metrics.sizes(self.index.stats()["count"])

    @requests(on="/index")
    def index_docs(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        identity.check_index(docs, kwargs.get("parameters") or {}, self.auth, self.index.store.owners)
        ready = []
        for doc in docs:
            error = doc.error or content_error(doc, encoded=True) or embedding_error(doc.embedding, self.index.config.dim)
            if error:
                mark_error(doc, error)
            else:
                ready.append(doc)
        for doc, status in zip(ready, self.index.upsert([convert.item(d) for d in ready])):
            if status == "duplicate":
                mark_error(doc, f"id: {doc.id!r} comes again later in this request; the last copy was stored")
            else:
                doc.status = status
        self.metrics.stored(d.status for d in ready)
        self.metrics.sizes(self.index.stats()["count"])
        for doc in docs:
            doc.embedding = doc.thumbnail = doc.blob = None
        return docs

    @requests(on="/search")
    def search(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        params = client_params(parse_search_params, identity.as_user(parameters, self.auth))
        ready = [d for d in docs if d.error is None and d.embedding is not None]
        found = {modality: self.index.search([d.embedding for d in ready], modality, params.k, params.username)
                 if modality in params.modalities else [[] for _ in ready] for modality in MODALITIES}
        self._attach([(doc, {m: found[m][i] for m in MODALITIES}) for i, doc in enumerate(ready)],
                     params.with_thumbnails)
        for doc in docs:
            if doc.error is None:
                doc.status = "ok"
            doc.embedding = doc.blob = None
        return docs

    @requests(on="/refine")
    def refine(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        """``/search`` again with the person's marks (see crossmodal/feedback)."""
        params = client_params(parse_refine_params, identity.as_user(parameters, self.auth))
        answers = []
        for doc in docs:
            if doc.error is None and doc.embedding is not None:
                found, doc.feedback = refine(self.index, doc.embedding, params, "text" if doc.text else "image")
                answers.append((doc, found))
            doc.embedding = doc.blob = None
        self._attach(answers, params.with_thumbnails)
        return docs

    def _attach(self, answers: list, with_thumbnails: bool) -> None:
        """Each query's matches (modality -> matches) onto its document; thumbnails, when asked
        for, come from one store read for the whole request (and its per-response cap)."""
        every = [m for _, found in answers for matches in found.values() for m in matches]
        thumbs = self.index.thumbnails(every) if with_thumbnails else {}
        for doc, found in answers:
            for modality, matches in found.items():
                setattr(doc, f"{modality}_matches", convert.match_docs(matches, thumbs))
            doc.status = "ok"

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        params = client_params(lambda p: parse_recommend_params(p, self.calibration.novelty_threshold),
                               identity.as_user(parameters, self.auth))
        for doc in docs:
            seeds = convert.seeds(doc.seeds)
            picks = recommend(self.index, seeds, params) if seeds else {}
            thumbs = self.index.thumbnails(convert.picked_matches(picks)) if params.with_thumbnails else {}
            doc.from_text = convert.pick_group(picks.get("text", {}), thumbs)
            doc.from_image = convert.pick_group(picks.get("image", {}), thumbs)
            doc.seeds, doc.status = None, "ok"
        return docs

    @requests(on="/delete")
    def delete(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        docs_allowed = identity.deletable(docs, kwargs.get("parameters") or {}, self.auth, self.index.store.owners)
        for doc, status in zip(docs_allowed, self.index.delete([d.id for d in docs_allowed])):
            doc.status = status
        self.metrics.sizes(self.index.stats()["count"])
        return docs

    @requests(on="/stats")
    def stats(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        tags = {**self.index.stats(), **asdict(self.calibration)}  # the page starts its cut-off there
        return DocList[ContentDoc]([ContentDoc(id="stats", status="ok", tags=tags)])

    def close(self) -> None:
        self.index.close()
        super().close()
