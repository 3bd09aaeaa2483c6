"""Jina adapter: CLIP image embeddings (and thumbnails) for image content and queries."""

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Optional, Sequence

from crossmodal.model.guard import allow_model_libraries

allow_model_libraries()  # the launcher blocks torch in every process it forks; this one runs the model

import torch  # noqa: E402
from docarray import DocList  # noqa: E402
from jina import requests  # noqa: E402
from open_clip.utils import to_2tuple  # noqa: E402

from crossmodal.api.schemas import ContentDoc  # noqa: E402
from crossmodal.api.validate import mark_error  # noqa: E402
from crossmodal.inputs.images import ImageInputError, ImageLimits, decode, image_bytes, thumbnail_data_uri  # noqa: E402
from crossmodal.model.batcher import ContinuousBatcher  # noqa: E402
from crossmodal.model.encode import encode_pixels, split_image_transform  # noqa: E402
from crossmodal.model.resolve import resolve  # noqa: E402
from crossmodal.model.towers import load_image_tower  # noqa: E402
from crossmodal.serve.encoder_executor import EncoderExecutor  # noqa: E402
from crossmodal.settings import ENCODER, LIMITS  # noqa: E402


class ClipImageEncoder(EncoderExecutor):
    """Holds only the vision tower; decoding runs in threads beside the model."""

    def __init__(self, model: Optional[str] = None, pretrained: Optional[str] = None,
                 device: str = "auto", batch_size: int = ENCODER.image_batch_size,
                 max_bytes: int = LIMITS.max_image_bytes, max_pixels: int = LIMITS.max_image_pixels,
                 data_roots: Sequence[str] = (), thumbnail_size: int = ENCODER.thumbnail_size,
                 decode_threads: int = ENCODER.decode_threads, **kwargs):
        super().__init__(**kwargs)
        self.tower = self.in_worker(load_image_tower, resolve(model or None, pretrained or None), device)
        self.resize, self.to_tensor = split_image_transform(self.tower.transform)
        self.batch_size = batch_size
        roots = [data_roots] if isinstance(data_roots, str) else list(data_roots or ())
        self.limits = ImageLimits(max_bytes, max_pixels, tuple(r for r in roots if r))
        self.thumbnail_size = thumbnail_size
        # JPEGs decode at reduced scale, never below what the model or the thumbnail needs
        self.decode_min_size = max(thumbnail_size, *to_2tuple(getattr(self.tower.module, "image_size", 224)))
        self.pool = ThreadPoolExecutor(decode_threads)
        self.batchers = {thumbs: ContinuousBatcher(partial(self._encode, with_thumbnail=thumbs), ENCODER.batch_docs,
                                                   self.worker) for thumbs in (True, False)}

    def _prepare(self, doc: ContentDoc):
        """Decode and resize one document (PIL only, in the pool); errors stay on the document."""
        try:
            image = decode(image_bytes(doc.blob, doc.uri, self.limits), self.limits,
                           field="blob" if doc.blob else "uri", min_size=self.decode_min_size)
        except ImageInputError as err:
            mark_error(doc, str(err))
            return None, None
        return image, self.resize(image)

    def _thumbnail(self, doc: ContentDoc, image) -> None:
        doc.thumbnail = thumbnail_data_uri(image, self.thumbnail_size)

    def _encode(self, docs: list[ContentDoc], with_thumbnail: bool) -> None:
        for start in range(0, len(docs), self.batch_size):
            batch = docs[start:start + self.batch_size]
            prepared = list(self.pool.map(self._prepare, batch))
            ready = [(doc, image, px) for doc, (image, px) in zip(batch, prepared) if px is not None]
            # thumbnails are written by the pool while the model encodes (one image: ~5% of a post)
            thumbs = [self.pool.submit(self._thumbnail, doc, image) for doc, image, _ in ready if with_thumbnail]
            if ready:
                vectors = encode_pixels(self.tower, torch.stack([self.to_tensor(px) for _, _, px in ready]))
                for (doc, _, _), vector in zip(ready, vectors):
                    doc.embedding = vector
            for thumb in thumbs:
                thumb.result()
            for doc in batch:  # the bytes are not needed downstream: keep the wire light
                doc.blob = None
                if doc.uri and doc.uri.startswith("data:"):
                    doc.uri = None

    @requests(on="/index")
    async def index(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        await self.batchers[True].run([d for d in docs if d.error is None and d.modality == "image"])
        return docs

    @requests(on=["/search", "/refine"])
    async def search(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        await self.batchers[False].run([d for d in docs if d.error is None and (d.blob or d.uri)])
        return docs

    def close(self) -> None:
        self.pool.shutdown()
        super().close()
