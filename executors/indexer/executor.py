"""Jina adapter: stores content with owners and answers owner-excluding searches.

Run as N shards (Jina polls them ALL), each keeps the ids that hash onto it
(``crossmodal/index/shards.py``) in its own workspace and answers searches from its own
part; the shards' merger (``executors/merger``) makes one answer of theirs.
"""

from dataclasses import asdict
from pathlib import Path

from docarray import DocList
from jina import Executor, requests

from crossmodal.api import convert, identity, merge
from crossmodal.api.params import parse_recommend_params, parse_refine_params, parse_search_params
from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import client_params, content_error, embedding_error, id_error, mark_error, posted_at
from crossmodal.feedback.search import Marks, gather_marks, refine
from crossmodal.index.content import ContentIndex, IndexConfig
from crossmodal.index.shards import check_shard, shard_dir, shard_of
from crossmodal.model.calibration import Calibration
from crossmodal.recommend.pick import shard_candidates
from crossmodal.serve.metrics import IndexMetrics
from crossmodal.settings import INDEX, LIMITS, MODALITIES


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
        self.shard, self.shards = int(self.runtime_args.shard_id or 0), int(self.runtime_args.shards or 1)
        workspace = shard_dir(Path(workspace_dir), self.shard, self.shards)
        check_shard(workspace, self.shard, self.shards)  # its own volume, on another machine
        self.index = ContentIndex(IndexConfig(workspace, model_label, int(embed_dim), index_factory,
                                              ef_search, nprobe, ef_construction=ef_construction))
        self.auth = identity.flag(auth)
        self.calibration = Calibration.from_json(calibration)  # the model's thresholds
        self.metrics = IndexMetrics.of(self.runtime_args)
        self.metrics.sizes(self.index.store.count)

    def _stamped(self, docs: DocList[ContentDoc]) -> DocList[ContentDoc]:
        """Mark the answer with this shard's number, so the merger can tell a missing shard."""
        if self.shards > 1:
            for doc in docs:
                doc.shard = self.shard
        return docs

    def _mine(self, docs: DocList[ContentDoc]) -> DocList[ContentDoc]:
        """The documents whose id this shard owns; the others travel on untouched (and light)."""
        mine = []
        for doc in docs:
            if shard_of(doc.id or "", self.shards) == self.shard:  # no id: one shard answers the error
                mine.append(doc)
            else:
                doc.embedding = doc.thumbnail = doc.blob = None
        return DocList[ContentDoc](mine)

    @requests(on="/index")
    def index_docs(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        mine = self._mine(docs)
        identity.check_index(mine, kwargs.get("parameters") or {}, self.auth, self.index.store.owners)
        ready = []
        for doc in mine:
            error = doc.error or content_error(doc, encoded=True) or embedding_error(doc.embedding, self.index.config.dim)
            if error:
                mark_error(doc, error)
            else:
                ready.append(doc)
        for doc, status in zip(ready, self.index.upsert([convert.item(d) for d in ready],
                                                        posted_at(kwargs.get("parameters")))):
            if status == "duplicate":
                mark_error(doc, f"id: {doc.id!r} comes again later in this request; the last copy was stored")
            else:
                doc.status = status
        self.metrics.stored(d.status for d in ready)
        self.metrics.sizes(self.index.store.count)
        for doc in mine:
            doc.embedding = doc.thumbnail = doc.blob = None
        return self._stamped(docs)

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
        return self._stamped(docs)

    @requests(on="/labels")
    def labels(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        """Before /refine: the marked items this shard owns and its share of a random sample."""
        params = client_params(parse_refine_params, identity.as_user(parameters, self.auth))
        marks = gather_marks(self.index, params, self.shard, self.shards)
        doc = ContentDoc(id="labels", status="ok")
        doc.posts = convert.post_docs(list(marks.found), [m for m, _ in marks.found.values()],
                                      [e for _, e in marks.found.values()])
        doc.sample = convert.post_docs([str(i) for i in range(len(marks.sample))], marks.sample_modalities,
                                       marks.sample)
        return self._stamped(DocList[ContentDoc]([doc]))

    @requests(on="/refine")
    def refine(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        """``/search`` again with the person's marks (see crossmodal/feedback), which the gateway
        gathered from every shard into the first document's ``posts`` and ``sample`` (``/labels``)."""
        params = client_params(parse_refine_params, identity.as_user(parameters, self.auth))
        marks = self._marks(docs[0]) if len(docs) and docs[0].posts is not None else None
        answers = []
        for doc in docs:
            if doc.error is None and doc.embedding is not None:
                found, doc.feedback = refine(self.index, doc.embedding, params, "text" if doc.text else "image", marks)
                answers.append((doc, found))
            doc.embedding = doc.blob = doc.posts = doc.sample = None
        self._attach(answers, params.with_thumbnails)
        return self._stamped(docs)

    def _marks(self, doc: ContentDoc) -> Marks:
        dim = self.index.config.dim
        ids, modalities, embeddings, _ = convert.posts(doc.posts, dim)
        _, sample_modalities, sample, _ = convert.posts(doc.sample, dim)
        return Marks(dict(zip(ids, zip(modalities, embeddings))), sample_modalities, sample)

    def _attach(self, answers: list, with_thumbnails: bool) -> None:
        """Each query's matches (modality -> matches) onto its document; thumbnails, when asked
        for, come from one store read for the whole request (and its per-response cap)."""
        every = [m for _, found in answers for matches in found.values() for m in matches]
        thumbs = self.index.thumbnails(every) if with_thumbnails else {}
        for doc, found in answers:
            for modality, matches in found.items():
                setattr(doc, f"{modality}_matches", convert.match_docs(matches, thumbs))
            doc.status = "ok"

    @requests(on="/history")
    def history(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        """Before /recommend: this shard's part of the user's most recent posts, per modality."""
        params = client_params(lambda p: parse_recommend_params(p, self.calibration.novelty_threshold),
                               identity.as_user(parameters, self.auth))
        doc = ContentDoc(id="history", status="ok")
        ids, modalities, embeddings, created = [], [], [], []
        for modality in MODALITIES:
            found = self.index.store.history(params.username, modality, limit=LIMITS.max_recommend_history)
            ids += found.ids
            modalities += [modality] * len(found.ids)
            embeddings += list(found.embeddings)
            created += list(found.created_at)
        doc.posts = convert.post_docs(ids, modalities, embeddings, created)
        return self._stamped(DocList[ContentDoc]([doc]))

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        """Each seed's candidates in this shard; one shard also picks (the merger does for several)."""
        params = client_params(lambda p: parse_recommend_params(p, self.calibration.novelty_threshold),
                               identity.as_user(parameters, self.auth))
        for doc in docs:
            seeds = convert.seeds(doc.seeds)
            n_history = len(doc.posts.ids) if doc.posts is not None else 0
            doc.candidates = convert.candidate_docs(shard_candidates(self.index, seeds, params, n_history))
        if self.shards == 1:
            return merge.recommend_answer([docs], params, self.index.config.dim)
        return self._stamped(docs)

    @requests(on="/items")
    def items(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        """Modality, text and thumbnail of the ids asked for (after /recommend, which picks
        without thumbnails and names each interest by one of the user's posts)."""
        mine = self._mine(docs)
        cap = LIMITS.max_thumbnails_per_response
        found = self.index.store.previews([d.id for d in mine[:cap] if d.id])
        for i, doc in enumerate(mine):
            if i >= cap:
                mark_error(doc, f"id: beyond {cap} items per request; ask for the rest in another request")
            elif doc.id in found:
                doc.modality, doc.text, doc.thumbnail = found[doc.id]
                doc.status = "ok"
            else:
                doc.status = "not_found"
        return self._stamped(docs)

    @requests(on="/delete")
    def delete(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        mine = self._mine(docs)
        for doc in mine:
            error = id_error(doc)  # "" would answer not_found, as if it had been looked up
            if error:
                mark_error(doc, error)
        named = DocList[ContentDoc]([doc for doc in mine if doc.status != "error"])
        docs_allowed = identity.deletable(named, kwargs.get("parameters") or {}, self.auth, self.index.store.owners)
        for doc, status in zip(docs_allowed, self.index.delete([d.id for d in docs_allowed])):
            doc.status = status
        self.metrics.sizes(self.index.store.count)
        return self._stamped(docs)

    @requests(on="/stats")
    def stats(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        tags = {**self.index.stats(), **asdict(self.calibration)}  # the page starts its cut-off there
        if self.shards > 1:
            listed = tags["owners"] <= LIMITS.max_owner_names_listed
            tags.update(owners_listed=listed, owner_names=self.index.store.owner_names() if listed else [])
        return self._stamped(DocList[ContentDoc]([ContentDoc(id="stats", status="ok", tags=tags)]))

    def close(self) -> None:
        self.index.close()
        super().close()
