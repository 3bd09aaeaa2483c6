"""The shipped demo model loads through open_clip's standard path and has learned the shapes."""
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from crossmodal.inputs.captions import read_captions
from crossmodal.train.datagen import generate_dataset
from crossmodal.train.metrics import precision_at_k

MODELS = Path(__file__).resolve().parents[1] / "models"
CHECKPOINT = MODELS / "demo-clip.pt"


@pytest.fixture(scope="module")
def demo():
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} not built yet (see models/README.md)")
    open_clip.add_model_config(MODELS)
    model, _, preprocess = open_clip.create_model_and_transforms("demo-clip", pretrained=str(CHECKPOINT))
    return model.eval(), preprocess, open_clip.get_tokenizer("demo-clip")


def test_checkpoint_is_a_small_plain_state_dict():
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} not built yet (see models/README.md)")
    assert CHECKPOINT.stat().st_size <= 25 * 2**20
    state = torch.load(CHECKPOINT, weights_only=True)  # no pickled code
    assert "logit_scale" in state and "visual.conv1.weight" in state


def test_captions_retrieve_their_own_images_on_unseen_data(demo, tmp_path):
    model, preprocess, tokenizer = demo
    # seed 77 is used by no training run; 6 captions x 10 images, so chance P@10 is 1/6
    data = generate_dataset(tmp_path, n_images=60, seed=77, n_distinct=6, progress=False)
    rows = read_captions(data / "captions.csv", data / "images")
    captions = np.array([c for _, c in rows])
    queries = sorted(set(captions))
    with torch.no_grad():
        images = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p, _ in rows]),
                                    normalize=True).numpy()
        texts = model.encode_text(tokenizer(queries), normalize=True).numpy()
    precision = [precision_at_k(captions[np.argsort(-(images @ t))] == q, 10) for q, t in zip(queries, texts)]
    assert np.mean(precision) >= 0.8, dict(zip(queries, precision))
    # image -> caption: the best-scoring of the 6 captions is the image's own for most images
    accuracy = np.mean(np.array(queries)[np.argmax(images @ texts.T, axis=1)] == captions)
    assert accuracy >= 0.8


def _colour_shape_precision(demo, tmp_path) -> dict:
    """Issue 13's check: "a <colour> <shape>" over unseen scenes, P@5 on both attributes.

    The queries are a fixed test list; the model was trained on descriptions drawn from
    scenes (crossmodal/train/describe.py), never on these strings as such.
    """
    from crossmodal.train.describe import parse_caption

    model, preprocess, tokenizer = demo
    data = generate_dataset(tmp_path, n_images=300, seed=77, progress=False)  # every scene equally likely
    rows = read_captions(data / "captions.csv", data / "images")
    scenes = [parse_caption(c) for _, c in rows]
    pairs = [(c, s) for c in ("red", "green", "blue", "yellow", "purple", "orange")
             for s in ("circle", "square")]
    queries = [f"a {colour} {shape}" for colour, shape in pairs]
    with torch.no_grad():
        images = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p, _ in rows]),
                                    normalize=True).numpy()
        texts = model.encode_text(tokenizer(queries), normalize=True).numpy()
    precision = {}
    for (colour, shape), query, t in zip(pairs, queries, texts):
        top = np.argsort(-(images @ t))[:5]
        precision[query] = np.mean([scenes[i].colour == colour and scenes[i].shape == shape for i in top])
    return precision


def test_short_queries_reach_the_issue_13_target(demo, tmp_path):
    precision = _colour_shape_precision(demo, tmp_path)
    # issue 13's target; the caption-only model got 0.15 and the ViT-tower model 0.47
    assert np.mean(list(precision.values())) >= 0.8, precision
