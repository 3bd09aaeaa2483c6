"""Batched, normalised CLIP embeddings from loaded towers.

The text path runs the transformer only up to the longest real token sequence of
the batch instead of the full 77-token context: CLIP's text tower is causal and
pools at the end-of-text token, so the padding positions never influence the
result, and a short query costs a fraction of the full context.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from PIL import Image
from torchvision.transforms import Compose

from crossmodal.model.towers import Tower

PAD_TOKEN = 0


def _truncatable(model: torch.nn.Module) -> bool:
    return (
        getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        and hasattr(model, "positional_embedding")
    )


def _cast_dtype(model: torch.nn.Module) -> torch.dtype:
    try:
        return model.transformer.get_cast_dtype()
    except AttributeError:  # int8-quantised blocks (precision.py) have no weight dtype: they take float32
        return torch.float32


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` computed over the used prefix of the context only."""
    if not _truncatable(model):
        return model.encode_text(tokens)
    used = int((tokens != PAD_TOKEN).sum(dim=1).max())
    tokens = tokens[:, :used]
    cast_dtype = _cast_dtype(model)
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:used].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:used, :used])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is None:
        return x
    if isinstance(model.text_projection, torch.nn.Linear):
        return model.text_projection(x)
    return x @ model.text_projection


@torch.inference_mode()
def encode_texts(tower: Tower, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per text."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tower.transform(list(texts[start:start + batch_size])).to(tower.device)
        out.append(F.normalize(encode_tokens(tower.module, tokens).float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, tower.dim), np.float32)


def split_image_transform(transform: Callable) -> tuple[Callable, Callable]:
    """``transform`` as its PIL steps (resize, crop: no torch) and its tensor steps (to tensor, normalise).

    A server decodes and resizes images in several threads; the tensor steps are torch
    operations, and torch called from a thread leaves that thread an OpenMP team that spins
    beside the encoder's own (on 2 cores a one-image post took ~20 ms longer). Keeping the
    tensor steps in the encoder's thread avoids it. A transform that is not a torchvision
    ``Compose`` with a to-tensor step is kept whole as the tensor part.
    """
    steps = getattr(transform, "transforms", None)
    cut = next((i for i, step in enumerate(steps or ()) if "ToTensor" in type(step).__name__), None)
    if cut is None:
        return (lambda image: image), transform
    return Compose(steps[:cut]), Compose(steps[cut:])


def preprocess_images(tower: Tower, images: Sequence[Image.Image]) -> torch.Tensor:
    return torch.stack([tower.transform(image) for image in images])


@torch.inference_mode()
def encode_pixels(tower: Tower, pixels: torch.Tensor) -> np.ndarray:
    features = tower.module(pixels.to(tower.device))
    return F.normalize(features.float(), dim=-1).cpu().numpy()


def encode_images(tower: Tower, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
    """L2-normalised float32 embeddings, one row per image."""
    out = [
        encode_pixels(tower, preprocess_images(tower, images[start:start + batch_size]))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, tower.dim), np.float32)
