"""Inference-only weight layouts for CLIP's transformers on CPU.

A short text query is a handful of tokens and an image fifty, so every linear layer
is a skinny matrix product whose cost is streaming its weights from memory. MKL
repacks an ``nn.Linear`` weight at every product, which for so few rows costs as much
as the product itself; oneDNN's matmul reads a weight packed once, at load, in its
blocked layout (``PackedLinear``; what ``torch.compile`` does to CPU linears). Measured
here on ViT-B-32 (2 cores): a short query's text encode 24 -> 14 ms, one image 110 -> 81 ms,
8 images unchanged, but 32 images ~10 % slower (2.35 s against MKL's 2.1 s). So the image
tower takes it where people post one thing at a time (the served Flow), and batch jobs
(``app.py -t index``) keep MKL's layout: ``image_layout``. Without oneDNN, an ``(in, out)``
row-major weight (``InOutLinear``) still streams faster than ``(out, in)`` (30 -> 19 ms
for a query). The maths is unchanged: outputs match to float32 rounding.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class InOutLinear(nn.Module):
    """``nn.Linear`` with its weight stored transposed and contiguous."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("weight_in_out", weight.detach().t().contiguous())
        self.register_buffer("bias", bias.detach().clone())

    @property
    def weight(self) -> torch.Tensor:  # open_clip reads the dtype from here
        return self.weight_in_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.addmm(self.bias, x.reshape(-1, shape[-1]), self.weight_in_out)
        return out.view(*shape[:-1], out.shape[-1])


def padded_rows(rows: int) -> int:
    """The rows a packed product runs at: ``rows`` rounded up to an even number up to 64, then
    to an eighth of its power of two (at most 12.5 % more work).

    oneDNN compiles a kernel per shape (~5 ms, ~0.6 MB kept): run at every row count, texts
    of varied lengths and batches built hundreds. Rounded, a short query (<= 64 tokens) or one
    image (50 patches) pays at most one padding row, and any batch up to 2,048 rows is
    one of 72 shapes."""
    if rows <= 64:
        return rows + rows % 2
    step = 1 << (rows.bit_length() - 4)
    return -(-rows // step) * step


class PackedLinear(nn.Module):
    """``nn.Linear`` with its weight in oneDNN's blocked layout, packed once at load.

    MKL repacks a weight at every product; for a few tokens that repacking costs as much
    as the product. oneDNN's packed matmul (what ``torch.compile`` uses for CPU linears)
    reads the weight as stored, at any number of rows, with a kernel compiled for each:
    rows are padded with zeros to ``padded_rows`` (each row's result is its own: the
    padding changes none of them).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None))
        self.register_buffer("bias", bias.detach().clone())
        self.out_features = weight.shape[0]

    @property
    def weight(self) -> torch.Tensor:  # open_clip reads the dtype from here
        return self.packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        padding = padded_rows(len(rows)) - len(rows)
        rows = F.pad(rows, (0, 0, 0, padding)) if padding else rows.contiguous()
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out[:len(out) - padding].view(*shape[:-1], self.out_features)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """An ordinary ``nn.Linear`` holding a copy of the weights (what quantisation looks for)."""
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    linear.weight.data.copy_(weight.detach())
    linear.bias.data.copy_(bias.detach())
    return linear


class SelfAttention(nn.Module):
    """Drop-in for an ``nn.MultiheadAttention`` used as self-attention, as open_clip calls it.

    ``linear`` builds its two projections: a layout of this module, or plain
    ``nn.Linear`` for ``precision.quantize_text_tower``.
    """

    def __init__(self, mha: nn.MultiheadAttention, linear=InOutLinear):
        super().__init__()
        self.heads, self.batch_first = mha.num_heads, mha.batch_first
        self.in_proj = linear(mha.in_proj_weight, mha.in_proj_bias)
        self.out_proj = linear(mha.out_proj.weight, mha.out_proj.bias)

    def forward(self, q_x, k_x=None, v_x=None, need_weights=False, attn_mask=None):
        x = q_x if self.batch_first else q_x.transpose(0, 1)
        b, length, width = x.shape
        qkv = self.in_proj(x).view(b, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, length, width))
        return (out if self.batch_first else out.transpose(0, 1)), None


IMAGE_LAYOUTS = ("packed", "dense")


def check_layout(layout: str) -> str:
    if layout not in IMAGE_LAYOUTS:
        raise ValueError(f"image_layout: must be one of {IMAGE_LAYOUTS}, got {layout!r}")
    return layout


def fast_linear(layout: str = "packed"):
    """``packed``: the quickest exact layout for a few rows that this torch build offers (one
    query, one image). ``dense``: MKL's, quickest for batches of 16-32 images."""
    packed = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    return PackedLinear if check_layout(layout) == "packed" and packed else InOutLinear


def known_layout(transformer: nn.Module) -> bool:
    """open_clip's standard blocks (biased self-attention and MLP), which the swaps here assume."""
    blocks = getattr(transformer, "resblocks", None)
    if not blocks:
        return False
    for block in blocks:
        attn, mlp = block.attn, getattr(block, "mlp", None)
        if not (isinstance(attn, nn.MultiheadAttention) and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
                and isinstance(getattr(mlp, "c_fc", None), nn.Linear) and isinstance(getattr(mlp, "c_proj", None), nn.Linear)
                and mlp.c_fc.bias is not None and mlp.c_proj.bias is not None):
            return False
    return True


def relayout(transformer: Optional[nn.Module], linear=None) -> bool:
    """Swap a transformer's projections for ``linear`` ones (default: ``fast_linear``), in place.
    An architecture this does not know is left as open_clip built it; returns whether it changed."""
    if not known_layout(transformer):
        return False
    linear = linear or fast_linear()
    for block in transformer.resblocks:
        block.attn = SelfAttention(block.attn, linear=linear)
        block.mlp.c_fc = linear(block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        block.mlp.c_proj = linear(block.mlp.c_proj.weight, block.mlp.c_proj.bias)
    return True


def relayout_text_tower(model: nn.Module) -> nn.Module:
    relayout(getattr(model, "transformer", None))
    return model


def relayout_image_tower(visual: nn.Module, layout: str = "packed") -> nn.Module:
    """A ViT's blocks (a ResNet or timm trunk has none of open_clip's: it stays as it is)."""
    relayout(getattr(visual, "transformer", None), fast_linear(layout))
    return visual
