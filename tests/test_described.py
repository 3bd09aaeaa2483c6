"""Training on descriptions drawn from scenes, with a loss that knows every matching pair."""
import torch

from crossmodal.train.datagen import sample_specs
from crossmodal.train.describe import parse_caption
from crossmodal.train.described import (
    UNCONSTRAINED,
    DescribedPairs,
    described_rows,
    matches,
    multi_positive_loss,
    scene_codes,
)


def test_rows_are_each_caption_then_descriptions_that_match_its_scene():
    captions = [s.caption() for s in sample_specs(30, seed=9)]
    owners, texts, codes = described_rows(captions, 3, seed=0)
    assert owners == [i for i in range(30) for _ in range(4)]
    assert texts[::4] == captions  # the full caption first, naming every attribute
    assert all(UNCONSTRAINED not in c for c in codes[::4])
    scenes = torch.tensor([scene_codes(parse_caption(c)) for c in captions])
    assert matches(torch.tensor(codes), scenes)[torch.arange(120), torch.tensor(owners)].all()
    assert described_rows(captions, 3, seed=0) == (owners, texts, codes)  # reproducible


def test_matches_means_every_named_attribute():
    scene = torch.tensor([[0, 1, 0, 2, 1], [0, 2, 0, 2, 1]])  # same but the colour
    text = torch.tensor([[0, 1, UNCONSTRAINED, UNCONSTRAINED, UNCONSTRAINED],
                         [UNCONSTRAINED] * 5])
    assert matches(text, scene).tolist() == [[True, False], [True, True]]


def test_multi_positive_loss_does_not_punish_other_matching_images():
    image = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=-1)
    text = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05]]), dim=-1)
    both = torch.tensor([[True, True, False]])
    only_first = torch.tensor([[True, False, False]])
    scale = torch.tensor(50.0)
    # with both red things counted as matches the loss is lower than when one is called wrong
    assert multi_positive_loss(image, text, scale, both) < multi_positive_loss(image, text, scale, only_first)


def test_dataset_yields_features_tokens_and_codes():
    captions = [s.caption() for s in sample_specs(5, seed=3)]
    features = torch.randn(5, 8)
    data = DescribedPairs(features, captions, lambda texts: torch.zeros(len(texts), 12, dtype=torch.long), 2, 0)
    assert len(data) == 15
    feature, tokens, text_codes, codes = data[4]
    assert torch.equal(feature, features[1]) and tokens.shape == (12,) and text_codes.shape == codes.shape == (5,)
