"""Jina adapter: plans recommendation seeds from a user's history (HDBSCAN interests).

It reads the indexer's store read-only and serves only ``/recommend``, so search
and index requests skip this hop entirely.
"""
from pathlib import Path
from typing import Optional

from docarray import DocList
from jina import Executor, requests

from crossmodal.api import convert, identity
from crossmodal.api.params import parse_recommend_params
from crossmodal.api.schemas import ContentDoc, MatchGroup
from crossmodal.api.validate import client_params
from crossmodal.index.store import Store, WorkspaceError
from crossmodal.recommend.plan import plan_user_seeds


class CrossmodalRecommender(Executor):
    def __init__(self, workspace_dir: str = "workspace", auth: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.auth = identity.flag(auth)
        self.store_dir = Path(workspace_dir)
        self._store: Optional[Store] = None

    def _open(self) -> Optional[Store]:
        """Open lazily: the indexer creates the store, possibly after this executor starts."""
        if self._store is None:
            try:
                self._store = Store(self.store_dir, read_only=True)
            except WorkspaceError:
                return None
        return self._store

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], parameters: dict, **kwargs) -> DocList[ContentDoc]:
        params = client_params(parse_recommend_params, identity.as_user(parameters, self.auth))
        store = self._open()
        seeds = plan_user_seeds(store, params) if store else []
        docs = docs or DocList[ContentDoc]([ContentDoc(id="recommend")])
        for doc in docs:
            doc.seeds = convert.seed_docs(seeds)
            doc.from_text, doc.from_image = MatchGroup(), MatchGroup()
            if not seeds:
                doc.reason = f"user {params.username!r} has no posts yet: nothing to recommend from"
        return docs

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        super().close()
