"""Opt-in int8 text encoder: close to fp32, smaller, and never the default."""
import numpy as np
import pytest
import torch

from crossmodal.model.encode import encode_texts
from crossmodal.model.precision import check_precision
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import load_text_tower
from crossmodal.settings import ENCODER, ServiceConfig
from tests.harness import TINY_MODEL

TEXTS = ["a red circle", "two small blue squares on a white background", "x", "the " * 90]


def _weight_bytes(module: torch.nn.Module) -> int:
    total = 0
    for m in module.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            total += m.weight().numel() * m.weight().element_size()
        tensors = [*m.parameters(recurse=False), *m.buffers(recurse=False)]
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total


def test_int8_is_close_to_fp32_and_smaller():
    spec = resolve(TINY_MODEL, "none")
    fp32, int8 = load_text_tower(spec, "cpu"), load_text_tower(spec, "cpu", precision="int8")
    exact, approx = encode_texts(fp32, TEXTS), encode_texts(int8, TEXTS)
    cosine = (exact * approx).sum(axis=1)
    assert (cosine > 0.98).all(), cosine
    assert not np.array_equal(exact, approx)  # it really is another computation
    assert np.allclose(np.linalg.norm(approx, axis=1), 1.0, atol=1e-5)
    linear = torch.ao.nn.quantized.dynamic.Linear
    assert sum(isinstance(m, linear) for m in int8.module.modules()) == 4 * len(int8.module.transformer.resblocks)
    assert _weight_bytes(int8.module.transformer) < 0.5 * _weight_bytes(fp32.module.transformer)


def test_fp32_is_the_default_and_bad_precision_is_named():
    assert ENCODER.text_precision == "fp32" and ServiceConfig().precision == "fp32"
    with pytest.raises(ValueError, match="precision: must be one of"):
        check_precision("fp8")
    with pytest.raises(ValueError, match="precision"):
        load_text_tower(resolve(TINY_MODEL, "none"), "cpu", precision="bf16")
