"""Jina adapter: CLIP embeddings for text and image content and queries (and image thumbnails).

Both towers live in this one process, as in clip-as-service's CLIPEncoder: importing torch
and open_clip costs ~430 MB of private memory per process with this torch build, so one
encoder process per tower paid for two torch runtimes (issue 12: 1.75x the memory of one
process holding a full CLIP, against 1.25x with one process), and every request made one more hop.
Replicas (``--replicas``) scale both towers together.

Every torch call of the process runs in one worker thread, loading included: OpenMP gives
each calling thread its own team, and a second team spinning beside the encoding one cost
a short ViT-B-32 text query 36 -> 23 ms and a one-image post 136 -> 111 ms (2 cores).
Decoding and resizing run in a pool beside it (PIL only, no torch).

This module imports no torch: the constructor lifts the launcher's block on model
libraries only once it knows the model, and keeps out those the model does not use
(``resolve.unused_libraries``: timm ~60 MB, and on the CPU triton ~75 MB), and imports
torchvision without torch.compile's dynamo and sympy (~70 MB, ``guard``).
"""
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, Optional, Sequence

from docarray import DocList
from jina import Executor, requests

from crossmodal.api.schemas import ContentDoc
from crossmodal.api.validate import content_error, mark_error, query_error
from crossmodal.inputs.images import ImageInputError, ImageLimits, decode, image_bytes, thumbnail_data_uri
from crossmodal.inputs.images import data_roots as image_roots  # the parameter's name is taken
from crossmodal.model.batcher import ContinuousBatcher
from crossmodal.model.guard import allow_model_libraries, import_torchvision_without_compiler
from crossmodal.model.resolve import resolve, unused_libraries
from crossmodal.settings import ENCODER, LIMITS, Limits


def _is_image(doc: ContentDoc) -> bool:
    return bool(doc.blob or doc.uri)


class ClipEncoder(Executor):
    """Validates content first (the Flow's first hop for every request but /recommend), then
    encodes texts and images; concurrent requests are batched per tower."""

    def __init__(self, model: Optional[str] = None, pretrained: Optional[str] = None, device: str = "auto",
                 precision: str = ENCODER.text_precision, text_batch_size: int = ENCODER.text_batch_size,
                 image_batch_size: int = ENCODER.image_batch_size, max_text_chars: int = LIMITS.max_text_chars,
                 max_bytes: int = LIMITS.max_image_bytes, max_pixels: int = LIMITS.max_image_pixels,
                 data_roots: Sequence[str] = (), thumbnail_size: int = ENCODER.thumbnail_size,
                 decode_threads: int = ENCODER.decode_threads, mmap_dir: str = "",
                 image_layout: str = ENCODER.image_layout, **kwargs):
        super().__init__(**kwargs)
        self.worker = ThreadPoolExecutor(1)  # the model's thread (see the module's docstring)
        spec = resolve(model or None, pretrained or None)
        allow_model_libraries()  # torch may load now: for device "auto", it says whether there is a GPU
        allow_model_libraries(unused=unused_libraries(spec, device))
        import_torchvision_without_compiler()
        from crossmodal.model.clip import ClipModel  # torch and open_clip from here on

        self.model = self.worker.submit(ClipModel, spec, device, precision, mmap_dir, image_layout).result()
        self.text_batch_size, self.image_batch_size = text_batch_size, image_batch_size
        self.text_limits = Limits(max_text_chars=max_text_chars)
        self.image_limits = ImageLimits(max_bytes, max_pixels, image_roots(data_roots))
        self.thumbnail_size = thumbnail_size
        # JPEGs decode at reduced scale, never below what the model or the thumbnail needs
        self.decode_min_size = max(thumbnail_size, self.model.image_size)
        self.pool = ThreadPoolExecutor(decode_threads)
        self.texts = ContinuousBatcher(self._encode_texts, ENCODER.batch_docs, self.worker)
        self.images = {thumbs: ContinuousBatcher(partial(self._encode_images, with_thumbnail=thumbs),
                                                 ENCODER.batch_docs, self.worker) for thumbs in (True, False)}

    def _validate(self, docs: DocList[ContentDoc], check: Callable) -> None:
        for doc in docs:
            error = check(doc, self.text_limits)
            if error:
                mark_error(doc, error)

    def _encode_texts(self, docs: list[ContentDoc]) -> None:
        for doc, vector in zip(docs, self.model.encode_texts([d.text for d in docs], self.text_batch_size)):
            doc.embedding = vector

    def _prepare(self, doc: ContentDoc):
        """Decode and resize one image (PIL only, in the pool); errors stay on the document."""
        try:
            image = decode(image_bytes(doc.blob, doc.uri, self.image_limits), self.image_limits,
                           field="blob" if doc.blob else "uri", min_size=self.decode_min_size)
        except ImageInputError as err:
            mark_error(doc, str(err))
            return None, None
        return image, self.model.resize(image)

    def _thumbnail(self, doc: ContentDoc, image) -> None:
        doc.thumbnail = thumbnail_data_uri(image, self.thumbnail_size)

    def _encode_images(self, docs: list[ContentDoc], with_thumbnail: bool) -> None:
        for start in range(0, len(docs), self.image_batch_size):
            batch = docs[start:start + self.image_batch_size]
            prepared = list(self.pool.map(self._prepare, batch))
            ready = [(doc, image, px) for doc, (image, px) in zip(batch, prepared) if px is not None]
            # thumbnails are written by the pool while the model encodes (one image: ~5% of a post)
            thumbs = [self.pool.submit(self._thumbnail, doc, image) for doc, image, _ in ready if with_thumbnail]
            if ready:
                vectors = self.model.encode_resized([px for _, _, px in ready])
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
        self._validate(docs, content_error)
        await self.texts.run([d for d in docs if d.error is None and d.modality == "text"])
        await self.images[True].run([d for d in docs if d.error is None and d.modality == "image"])
        return docs

    @requests(on=["/search", "/refine"])
    async def search(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        self._validate(docs, query_error)
        await self.texts.run([d for d in docs if d.error is None and not _is_image(d)])
        await self.images[False].run([d for d in docs if d.error is None and _is_image(d)])
        return docs

    @requests(on="/recommend")
    def recommend(self, docs: DocList[ContentDoc], **kwargs) -> DocList[ContentDoc]:
        return None  # passes through: Jina requires every hop after the recommender to bind it

    def close(self) -> None:
        self.pool.shutdown()
        self.worker.shutdown()
        super().close()
