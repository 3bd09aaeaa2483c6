"""Jina adapter: CLIP text embeddings for text content and text queries."""

from typing import Callable, Optional

from docarray import DocList
from jina import Executor, requests

from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import content_error, mark_error, query_error
from crossmodal.model.encode import encode_texts
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import load_text_tower
from crossmodal.settings import ENCODER, LIMITS, Limits


class ClipTextEncoder(Executor):
    """Holds only the text tower; validates content first since it is the Flow's first hop."""

    def __init__(self, model: Optional[str] = None, pretrained: Optional[str] = None,
                 device: str = "auto", batch_size: int = ENCODER.text_batch_size,
                 max_text_chars: int = LIMITS.max_text_chars, **kwargs):
        super().__init__(**kwargs)
        self.tower = load_text_tower(resolve(model or None, pretrained or None), device)
        self.batch_size = batch_size
        self.limits = Limits(max_text_chars=max_text_chars)

    def _encode(self, docs: list[ContentDoc]) -> None:
        if docs:
            for doc, vector in zip(docs, encode_texts(self.tower, [d.text for d in docs], self.batch_size)):
                doc.embedding = vector

    def _validate(self, docs: DocList[ContentDoc], check: Callable) -> None:
        for doc in docs:
            error = check(doc, self.limits)
            if error:
                mark_error(doc, error)

    @requests(on="/index")
    def index(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._validate(docs, content_error)
        self._encode([d for d in docs if d.error is None and d.modality == "text"])
        return docs

    @requests(on=["/search", "/refine"])
    def search(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._validate(docs, query_error)
        self._encode([d for d in docs if d.error is None and not (d.blob or d.uri)])
        return docs

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        """Pass-through: Jina requires every hop after the recommender to bind /recommend."""
        return None
