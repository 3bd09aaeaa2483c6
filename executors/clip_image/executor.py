"""Jina adapter: CLIP image embeddings (and thumbnails) for image content and queries."""

from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import torch
from docarray import DocList
from jina import Executor, requests
from open_clip.utils import to_2tuple

from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import mark_error
from crossmodal.inputs.images import ImageInputError, ImageLimits, decode, image_bytes, thumbnail_data_uri
from crossmodal.model.encode import encode_pixels
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import load_image_tower
from crossmodal.settings import ENCODER, LIMITS


class ClipImageEncoder(Executor):
    """Holds only the vision tower; decoding runs in threads beside the model."""

    def __init__(self, model: Optional[str] = None, pretrained: Optional[str] = None,
                 device: str = "auto", batch_size: int = ENCODER.image_batch_size,
                 max_bytes: int = LIMITS.max_image_bytes, max_pixels: int = LIMITS.max_image_pixels,
                 data_roots: Sequence[str] = (), thumbnail_size: int = ENCODER.thumbnail_size,
                 decode_threads: int = ENCODER.decode_threads, **kwargs):
        super().__init__(**kwargs)
        self.tower = load_image_tower(resolve(model or None, pretrained or None), device)
        self.batch_size = batch_size
        roots = [data_roots] if isinstance(data_roots, str) else list(data_roots or ())
        self.limits = ImageLimits(max_bytes, max_pixels, tuple(r for r in roots if r))
        self.thumbnail_size = thumbnail_size
        # JPEGs decode at reduced scale, never below what the model or the thumbnail needs
        self.decode_min_size = max(thumbnail_size, *to_2tuple(getattr(self.tower.module, "image_size", 224)))
        self.pool = ThreadPoolExecutor(decode_threads)

    def _prepare(self, doc: ContentDoc, with_thumbnail: bool):
        """Decode and preprocess one document; errors stay on the document."""
        try:
            image = decode(image_bytes(doc.blob, doc.uri, self.limits), self.limits,
                           field="blob" if doc.blob else "uri", min_size=self.decode_min_size)
        except ImageInputError as err:
            mark_error(doc, str(err))
            return None
        if with_thumbnail:
            doc.thumbnail = thumbnail_data_uri(image, self.thumbnail_size)
        return self.tower.transform(image)

    def _encode(self, docs: list[ContentDoc], with_thumbnail: bool) -> None:
        for start in range(0, len(docs), self.batch_size):
            batch = docs[start:start + self.batch_size]
            pixels = list(self.pool.map(lambda d: self._prepare(d, with_thumbnail), batch))
            ready = [(doc, px) for doc, px in zip(batch, pixels) if px is not None]
            if ready:
                vectors = encode_pixels(self.tower, torch.stack([px for _, px in ready]))
                for (doc, _), vector in zip(ready, vectors):
                    doc.embedding = vector
            for doc in batch:  # the bytes are not needed downstream: keep the wire light
                doc.blob = None
                if doc.uri and doc.uri.startswith("data:"):
                    doc.uri = None

    @requests(on="/index")
    def index(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._encode([d for d in docs if d.error is None and d.modality == "image"], with_thumbnail=True)
        return docs

    @requests(on=["/search", "/refine"])
    def search(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._encode([d for d in docs if d.error is None and (d.blob or d.uri)], with_thumbnail=False)
        return docs

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        """Pass-through: Jina requires every hop after the recommender to bind /recommend."""
        return None

    def close(self) -> None:
        self.pool.shutdown()
        super().close()
