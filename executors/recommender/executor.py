"""Jina adapter: plans recommendation seeds from a user's history (HDBSCAN interests).

The history arrives in the request: the gateway gathers it from every indexer shard
first (``/history``), so this process opens no store and may run on any machine. It
serves only ``/recommend``, so search and index requests skip this hop entirely.
"""
from docarray import DocList
from jina import Executor, requests

from crossmodal.api import convert, identity
from crossmodal.api.params import parse_recommend_params
from crossmodal.api.schemas import ContentDoc, MatchGroup
from crossmodal.api.validate import client_params
from crossmodal.recommend.plan import plan_user_seeds


class CrossmodalRecommender(Executor):
    def __init__(self, auth: bool = False, embed_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(embed_dim) < 1:
            raise ValueError(f"embed_dim is required, got {embed_dim!r}")
        self.auth, self.dim = identity.flag(auth), int(embed_dim)

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        params = client_params(parse_recommend_params, identity.as_user(parameters, self.auth))
        docs = docs or DocList[ContentDoc]([ContentDoc(id="recommend")])
        for doc in docs:
            ids, modalities, embeddings, created_at = convert.posts(doc.posts, self.dim)
            seeds = plan_user_seeds(modalities, embeddings, created_at, params)
            doc.seeds = convert.seed_docs(seeds, ids)
            doc.from_text, doc.from_image = MatchGroup(), MatchGroup()
            if not seeds:
                doc.reason = f"user {params.username!r} has no posts yet: nothing to recommend from"
        return docs
