"""The encoders: truncated text context equals open_clip, towers are separate."""
import numpy as np
import pytest
import torch

from crossmodal.model.encode import encode_images, encode_texts
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import create_model, load_image_tower, load_text_tower
from tests.harness import TINY_MODEL

TEXTS = ["a red circle", "two small blue squares on a white background", "x", "the " * 90]


@pytest.fixture(scope="module")
def text_tower():
    return load_text_tower(resolve(TINY_MODEL, "none"))


def _open_clip_reference(tower, texts):
    """open_clip's own full-context encode_text on the same (seeded) weights, untouched."""
    model, _ = create_model(tower.spec, torch.device("cpu"), seed=0)
    with torch.inference_mode():
        full = model.encode_text(tower.transform(texts))
    return torch.nn.functional.normalize(full, dim=-1).numpy()


def test_truncated_context_matches_open_clip(text_tower):
    ours = encode_texts(text_tower, TEXTS, batch_size=2)
    cosine = (ours * _open_clip_reference(text_tower, TEXTS)).sum(axis=1)
    assert (cosine >= 0.9999).all(), cosine


def test_truncated_context_matches_open_clip_vit_b32():
    tower = load_text_tower(resolve("ViT-B-32", "none"))
    ours = encode_texts(tower, TEXTS[:3])
    assert ((ours * _open_clip_reference(tower, TEXTS[:3])).sum(axis=1) >= 0.9999).all()


def test_cpu_layout_computes_the_same_transformer():
    """The in/out weight layout is exact, batched and padded inputs included."""
    from crossmodal.model.cpu_layout import relayout_text_tower

    model, _ = create_model(resolve(TINY_MODEL, "none"), torch.device("cpu"), seed=3)
    tokens = load_text_tower(resolve(TINY_MODEL, "none")).transform(TEXTS)
    with torch.inference_mode():
        before = model.encode_text(tokens)
        assert type(relayout_text_tower(model).transformer.resblocks[0].attn).__name__ == "InOutSelfAttention"
        after = model.encode_text(tokens)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


def test_embeddings_are_unit_float32_and_towers_are_split(text_tower):
    vectors = encode_texts(text_tower, TEXTS)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not hasattr(text_tower.module, "visual")
    image_tower = load_image_tower(resolve(TINY_MODEL, "none"))
    assert not hasattr(image_tower.module, "token_embedding"), "the image tower must not keep the text tower"
    from PIL import Image

    images = [Image.new("RGB", (50, 30), c) for c in ("red", "blue")]
    vectors = encode_images(image_tower, images)
    assert vectors.shape == (2, image_tower.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_same_seed_same_random_weights():
    a = load_text_tower(resolve(TINY_MODEL, "none"))
    b = load_text_tower(resolve(TINY_MODEL, "none"))
    np.testing.assert_allclose(encode_texts(a, ["seeded"]), encode_texts(b, ["seeded"]))
