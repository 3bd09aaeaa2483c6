"""Both towers of one open_clip model, as the service's encoder uses them.

Everything here runs in the encoder's model thread (executors/clip): the executor
itself imports no torch, so that it can decide first which of open_clip's optional
libraries this model needs (``resolve.unused_libraries``).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
from open_clip.utils import to_2tuple
from PIL import Image

from crossmodal.model.encode import encode_pixels, encode_texts, split_image_transform
from crossmodal.model.memory import release_freed_memory
from crossmodal.model.paging import map_embedding_tables
from crossmodal.model.resolve import ModelSpec
from crossmodal.model.towers import load_towers

log = logging.getLogger(__name__)


class ClipModel:
    """Text and image towers from one load; images arrive resized (``resize`` runs in the
    caller's decode threads, PIL only) and become tensors here. With ``mmap_dir`` (a folder
    on disk), the token table is read from a file as queries use its rows (``paging``)."""

    def __init__(self, spec: ModelSpec, device: str = "auto", precision: str = "fp32",
                 mmap_dir: Optional[str] = None, image_layout: str = "packed"):
        self.text, self.image = load_towers(spec, device, precision=precision, image_layout=image_layout)
        if mmap_dir:
            try:
                map_embedding_tables(self.text.module, mmap_dir)
            except OSError as err:  # a read-only or full disk costs memory, not the service
                log.warning("the token table stays in memory: cannot map it from a file in %s: %s", mmap_dir, err)
            release_freed_memory()
        self.resize, self.to_tensor = split_image_transform(self.image.transform)
        self.image_size = max(to_2tuple(getattr(self.image.module, "image_size", 224)))

    def encode_texts(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return encode_texts(self.text, texts, batch_size)

    def encode_resized(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embeddings of images already passed through ``resize``."""
        return encode_pixels(self.image, torch.stack([self.to_tensor(image) for image in images]))
