"""No-op executors with the product's schema and topology: the cost of the hops alone."""
from docarray import DocList
from jina import Executor, requests

from crossmodal.api.schemas import ContentDoc


class NoopFirst(Executor):
    """Stands in for the recommender: binds only /recommend, so searches skip it."""

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        return docs


class Noop(Executor):
    @requests(on=["/index", "/search", "/recommend"])
    def passthrough(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        return docs
