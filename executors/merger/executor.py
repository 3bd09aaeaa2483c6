"""Jina adapter: one answer from every indexer shard's (the shards' ``uses_after``).

Jina polls every shard for every request and hands this executor their answers, one
document list per shard (``docs_matrix``); the merging itself is ``crossmodal/api/merge.py``.
Without shards there is no merger: the single indexer answers whole.
"""
from docarray import DocList
from jina import Executor, requests

from crossmodal.api import identity, merge
from crossmodal.api.params import parse_recommend_params, parse_search_params
from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import client_params
from crossmodal.model.calibration import Calibration


class CrossmodalMerger(Executor):
    def __init__(self, auth: bool = False, embed_dim: int = 0, calibration: str = "", shards: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(embed_dim) < 1 or int(shards) < 1:
            raise ValueError(f"embed_dim and shards are required, got {embed_dim!r}, {shards!r}")
        self.auth, self.dim, self.expected = identity.flag(auth), int(embed_dim), int(shards)
        self.calibration = Calibration.from_json(calibration)

    def _shards(self, docs_matrix, docs) -> list:
        """Each shard's answer, in shard order, once every shard has answered."""
        return merge.check_shards(list(docs_matrix) if docs_matrix else [docs], self.expected)

    @requests(on=["/index", "/delete", "/items"])
    def owned(self, docs: DocList[ContentDoc], docs_matrix=None, **kwargs) -> DocList[ContentDoc]:
        return merge.owned_answers(self._shards(docs_matrix, docs))

    @requests(on=["/search", "/refine"])
    def search(self, docs: DocList[ContentDoc], parameters: dict, docs_matrix=None, **kwargs) -> DocList[ContentDoc]:
        params = client_params(parse_search_params, {k: v for k, v in (parameters or {}).items() if k == "k"})
        return merge.search_answers(self._shards(docs_matrix, docs), params.k)

    @requests(on=["/history", "/labels"])
    def posts(self, docs: DocList[ContentDoc], docs_matrix=None, **kwargs) -> DocList[ContentDoc]:
        return merge.posts_answer(self._shards(docs_matrix, docs), self.dim)

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], parameters: dict, docs_matrix=None,
                  **kwargs) -> DocList[ContentDoc]:
        params = client_params(lambda p: parse_recommend_params(p, self.calibration.novelty_threshold),
                               identity.as_user(parameters, self.auth))
        return merge.recommend_answer(self._shards(docs_matrix, docs), params, self.dim)

    @requests(on="/stats")
    def stats(self, docs: DocList[ContentDoc], docs_matrix=None, **kwargs) -> DocList[ContentDoc]:
        return merge.stats_answer(self._shards(docs_matrix, docs))
