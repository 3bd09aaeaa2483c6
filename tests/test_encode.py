"""The encoders: truncated text context equals open_clip, towers are separate."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from crossmodal.model.encode import encode_images, encode_texts
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import create_model, load_image_tower, load_text_tower
from tests.harness import ROOT, TINY_MODEL

KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")

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


@pytest.mark.parametrize("layout", ["PackedLinear", "InOutLinear"])
def test_cpu_layouts_compute_the_same_towers(layout):
    """Both layouts are exact for either tower, batched and padded inputs included."""
    from crossmodal.model import cpu_layout

    model, _ = create_model(resolve(TINY_MODEL, "none"), torch.device("cpu"), seed=3)
    tokens = load_text_tower(resolve(TINY_MODEL, "none")).transform(TEXTS)
    pixels = torch.randn(3, 3, *model.visual.image_size)
    linear = getattr(cpu_layout, layout)
    with torch.inference_mode():
        before = model.encode_text(tokens), model.visual(pixels)
        assert cpu_layout.relayout(model.transformer, linear) and cpu_layout.relayout(model.visual.transformer, linear)
        for block in (model.transformer.resblocks[0], model.visual.transformer.resblocks[-1]):
            assert type(block.attn.in_proj) is linear and type(block.mlp.c_proj) is linear
        after = model.encode_text(tokens), model.visual(pixels)
    for b, a in zip(before, after):
        assert torch.allclose(b, a, atol=1e-5), (b - a).abs().max()


def test_the_service_towers_take_the_packed_layout_on_cpu_and_batch_jobs_the_dense_one():
    from crossmodal.model.cpu_layout import InOutLinear, PackedLinear, fast_linear
    from crossmodal.model.towers import load_towers

    assert fast_linear() is PackedLinear  # this torch build has oneDNN: the layout benchmarked
    text, image = load_towers(resolve(TINY_MODEL, "none"), device="cpu")
    assert type(text.module.transformer.resblocks[0].mlp.c_fc) is PackedLinear
    assert type(image.module.transformer.resblocks[0].attn.out_proj) is PackedLinear
    text, image = load_towers(resolve(TINY_MODEL, "none"), device="cpu", image_layout="dense")
    assert type(text.module.transformer.resblocks[0].mlp.c_fc) is PackedLinear  # text stays packed
    assert type(image.module.transformer.resblocks[0].attn.out_proj) is InOutLinear
    with pytest.raises(ValueError, match="image_layout"):
        load_towers(resolve(TINY_MODEL, "none"), device="cpu", image_layout="fast")


def test_batch_jobs_run_the_dense_image_layout_and_the_served_flow_the_packed_one(tmp_path):
    import app
    from crossmodal.serve.flow import flow_env

    spec = resolve(TINY_MODEL, "none")
    layouts = {argv[1]: flow_env(app.service_config(app.parse_args([*argv, "--workspace", str(tmp_path)])), spec)
               ["CROSSMODAL_IMAGE_LAYOUT"]
               for argv in (["-t", "index"], ["-t", "eval"], ["-t", "query"], ["-t", "export", "--format", "k8s"])}
    assert layouts == {"index": "dense", "eval": "dense", "query": "packed", "export": "packed"}


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


@pytest.mark.parametrize("size", [224, 48])
def test_split_image_transform_is_the_whole_transform(size):
    """The encoder resizes in its decode threads and makes tensors in its model thread: the two
    halves must give exactly what open_clip's evaluation transform gives, for any image mode."""
    from open_clip import image_transform
    from PIL import Image

    from crossmodal.model.encode import split_image_transform

    whole = image_transform(size, is_train=False)
    resize, to_tensor = split_image_transform(whole)
    rng = np.random.default_rng(0)
    for mode, shape in (("RGB", (480, 640, 3)), ("RGBA", (37, 301, 4)), ("L", (300, 200))):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        resized = resize(image)
        assert isinstance(resized, Image.Image), "the first half must stay PIL (no torch in decode threads)"
        assert torch.equal(to_tensor(resized), whole(image)), mode


def test_split_image_transform_keeps_an_unknown_transform_whole():
    from crossmodal.model.encode import split_image_transform

    def custom(image):
        return torch.zeros(3, 4, 4)

    resize, to_tensor = split_image_transform(custom)
    assert resize("as is") == "as is" and to_tensor is custom


def test_packed_products_run_at_few_row_counts():
    """Each row count is a oneDNN kernel compiled and kept: rounded, any batch up to 2,048
    rows is one of 72 shapes, a short query or one image is padded by one row at most."""
    from crossmodal.model.cpu_layout import padded_rows

    assert len({padded_rows(rows) for rows in range(1, 2049)}) == 72
    for rows in range(1, 2049):
        assert rows <= padded_rows(rows) <= (rows + 1 if rows <= 64 else rows * 1.125)
    assert padded_rows(50) == 50  # one ViT-B-32 image: 49 patches and the class token


def test_packed_linear_is_exact_at_any_row_count():
    from crossmodal.model.cpu_layout import PackedLinear

    linear = torch.nn.Linear(48, 80)
    packed = PackedLinear(linear.weight, linear.bias)
    with torch.inference_mode():
        for shape in [(1, 1, 48), (3, 7, 48), (65, 48), (2, 50, 48), (129, 48), (9, 111, 48)]:
            x = torch.randn(shape)
            out = packed(x)
            assert out.shape == (*shape[:-1], 80)
            assert torch.allclose(out, linear(x), atol=1e-5), shape


def test_texts_of_many_lengths_leave_a_bounded_kernel_cache():
    """ViT-B-32's text tower at 37 lengths x 3 batch sizes: with oneDNN's default 1,024 kernels
    kept, the process grew by ~255 MB; bounded (settings.kernel_cache), by ~60-70 MB (~150 MB with rounded rows alone)."""
    code = """
import os, sys
from crossmodal.model.encode import encode_texts
from crossmodal.model.resolve import resolve
from crossmodal.model.towers import load_text_tower
def pss():
    return next(int(l.split()[1]) for l in open("/proc/self/smaps_rollup") if l.startswith("Pss:")) / 1024
tower = load_text_tower(resolve("ViT-B-32", "none"))
encode_texts(tower, ["warm up"])
before = pss()
for words in range(1, 75, 2):
    for batch in (1, 3, 8):
        encode_texts(tower, [" ".join(["red"] * words)] * batch)
print(round(pss() - before))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_VARIABLES})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) < 105, done.stdout
