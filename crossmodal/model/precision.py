"""Opt-in reduced precision for the text tower on CPU (``--precision``); fp32 stays the default.

A short query is bound by streaming the text transformer's weights from memory;
int8 weights (PyTorch dynamic quantisation: int8 weights, activations quantised per
call, fp32 accumulation) read a quarter of the bytes. The embeddings move slightly
(bench/precision.py reports cosine and recall@10 against fp32), which is why it is
opt-in. bf16 is not offered: these CPUs (AVX2, no AVX512-BF16) compute it slower than fp32.
"""
from __future__ import annotations

import torch
from torch import nn

from crossmodal.model.cpu_layout import SelfAttention, known_layout, plain_linear, relayout_text_tower

PRECISIONS = ("fp32", "int8")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
    return precision


def quantize_text_tower(model: nn.Module) -> nn.Module:
    """Every linear layer of the text transformer in int8 (self-attention's projections included)."""
    if not known_layout(getattr(model, "transformer", None)):
        raise ValueError("precision 'int8': this model's text blocks are not open_clip's standard ones")
    for block in model.transformer.resblocks:
        block.attn = SelfAttention(block.attn, linear=plain_linear)
    torch.ao.quantization.quantize_dynamic(model.transformer, {nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def apply_text_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """The text tower as ``precision`` asks, on CPU; fp32 takes the exact in/out weight layout."""
    if check_precision(precision) == "fp32":
        return relayout_text_tower(model) if device.type == "cpu" else model
    if device.type != "cpu":
        raise ValueError(f"precision {precision!r} is for CPU inference; use fp32 on {device}")
    return quantize_text_tower(model)
