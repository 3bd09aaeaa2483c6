"""Jina adapter: CLIP text embeddings for text content and text queries."""

from typing import Callable, Optional

from crossmodal.model.guard import allow_model_libraries

allow_model_libraries()  # the launcher blocks torch in every process it forks; this one runs the model

from docarray import DocList  # noqa: E402
from jina import requests  # noqa: E402

from crossmodal.api.schemas import ContentDoc  # noqa: E402
from crossmodal.api.validate import content_error, mark_error, query_error  # noqa: E402
from crossmodal.model.batcher import ContinuousBatcher  # noqa: E402
from crossmodal.model.encode import encode_texts  # noqa: E402
from crossmodal.model.resolve import resolve  # noqa: E402
from crossmodal.model.towers import load_text_tower  # noqa: E402
from crossmodal.serve.encoder_executor import EncoderExecutor  # noqa: E402
from crossmodal.settings import ENCODER, LIMITS, Limits  # noqa: E402


class ClipTextEncoder(EncoderExecutor):
    """Holds only the text tower; validates content first since it is the Flow's first hop."""

    def __init__(self, model: Optional[str] = None, pretrained: Optional[str] = None,
                 device: str = "auto", batch_size: int = ENCODER.text_batch_size,
                 max_text_chars: int = LIMITS.max_text_chars, precision: str = ENCODER.text_precision, **kwargs):
        super().__init__(**kwargs)
        self.tower = self.in_worker(load_text_tower, resolve(model or None, pretrained or None), device,
                                    precision=precision)
        self.batch_size = batch_size
        self.limits = Limits(max_text_chars=max_text_chars)
        self.batcher = ContinuousBatcher(self._encode, ENCODER.batch_docs, self.worker)

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
    async def index(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._validate(docs, content_error)
        await self.batcher.run([d for d in docs if d.error is None and d.modality == "text"])
        return docs

    @requests(on=["/search", "/refine"])
    async def search(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._validate(docs, query_error)
        await self.batcher.run([d for d in docs if d.error is None and not (d.blob or d.uri)])
        return docs
