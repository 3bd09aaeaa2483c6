"""Training texts drawn from each image's scene, and a loss that knows which pairs match.

``CLIP``'s loss treats every other image of a batch as wrong for a text. That is right
for unique captions and wrong for "something red", which a sixth of the batch
matches: the model would be taught to push matching red things away. Here each text
carries the attributes it names and each image its scene, so a batch knows every
matching pair, and the loss asks for probability mass on any of them (multi-positive
contrastive loss, as in supervised contrastive learning). Off-topic texts (random
vocabulary words, letter salad) match no image: they are only ever negatives, so that
"asdfghjkl" does not score like a description.
"""
from __future__ import annotations

import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from crossmodal.train.datagen import SceneSpec
from crossmodal.train.describe import ATTRIBUTES, Description, describe, parse_caption

UNCONSTRAINED = -1
NOTHING = -2  # an attribute value no scene has: the text matches no image


def _values() -> dict[str, list[str]]:
    from crossmodal.train.datagen import BACKGROUNDS, COLOURS, COUNTS, SHAPES, SIZES

    return {"shape": list(SHAPES), "colour": list(COLOURS), "size": list(SIZES), "count": list(COUNTS),
            "background": list(BACKGROUNDS)}


def scene_codes(spec: SceneSpec) -> list[int]:
    values = _values()
    return [values[a].index(getattr(spec, a)) for a in ATTRIBUTES]


def description_codes(found: Description) -> list[int]:
    values = _values()
    return [values[a].index(found.attributes[a]) if a in found.attributes else UNCONSTRAINED for a in ATTRIBUTES]


def described_rows(captions: list[str], per_image: int, seed: int) -> tuple[list[int], list[str], list[list[int]]]:
    """For each image: its caption, then ``per_image`` descriptions of its scene.

    Returns the image index of each row, its text and its attribute codes. Captions
    must be the generator's: the scene is read back from them.
    """
    rng = random.Random(f"described-{seed}")
    owners, texts, codes = [], [], []
    for i, caption in enumerate(captions):
        spec = parse_caption(caption)
        full = Description(caption, {a: getattr(spec, a) for a in ATTRIBUTES})
        for found in [full, *(describe(spec, rng) for _ in range(per_image))]:
            owners.append(i)
            texts.append(found.text)
            codes.append(description_codes(found))
    return owners, texts, codes


class DescribedPairs(Dataset):
    """(image features or pixels, text tokens, text attribute codes, image scene codes) per row."""

    def __init__(self, features: torch.Tensor, captions: list[str], tokenizer: Callable, per_image: int, seed: int,
                 off_topic: float = 0.0):
        if len(features) != len(captions):
            raise ValueError(f"features: {len(features)} rows for {len(captions)} captions")
        owners, texts, codes = described_rows(captions, per_image, seed)
        if off_topic > 0:
            from crossmodal.train.calibrate import off_topic_texts

            rng = random.Random(f"off-topic-{seed}")
            known = {w for t in texts for w in t.replace(",", " ").split()}
            extra = off_topic_texts(int(off_topic * len(captions)), rng, list(tokenizer.encoder), known)
            owners += [rng.randrange(len(captions)) for _ in extra]
            texts += extra
            codes += [[NOTHING] * len(ATTRIBUTES) for _ in extra]
        self.features = features
        self.owners = torch.tensor(owners)
        self.tokens = tokenizer(texts)
        self.text_codes = torch.tensor(codes)
        self.scene_codes = torch.tensor([scene_codes(parse_caption(c)) for c in captions])

    def __len__(self) -> int:
        return len(self.owners)

    def __getitem__(self, i: int):
        image = int(self.owners[i])
        return self.features[image], self.tokens[i], self.text_codes[i], self.scene_codes[image]


def matches(text_codes: torch.Tensor, scene_codes: torch.Tensor) -> torch.Tensor:
    """[texts, images] booleans: the image's scene has every attribute the text names."""
    t, s = text_codes[:, None, :], scene_codes[None, :, :]
    return ((t == UNCONSTRAINED) | (t == s)).all(dim=-1)


def multi_positive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                        positive: torch.Tensor) -> torch.Tensor:
    """Mean over both directions of -log(total softmax probability on the matching items)."""
    logits = logit_scale * text_features @ image_features.T
    masked = logits.masked_fill(~positive, float("-inf"))
    text_to_image = torch.logsumexp(logits, 1) - torch.logsumexp(masked, 1)
    image_to_text = torch.logsumexp(logits, 0) - torch.logsumexp(masked, 0)
    # an item nothing in the batch matches has nothing to be pulled towards (never in a
    # training batch, where each row's own text and image match)
    return (text_to_image[positive.any(1)].mean() + image_to_text[positive.any(0)].mean()) / 2


def described_loss(batch, clip: torch.nn.Module, device: str) -> torch.Tensor:
    """The loss of one ``DescribedPairs`` batch: image features (locked tower) or pixels."""
    images, tokens, text_codes, codes = (x.to(device) for x in batch)
    image_features = (F.normalize(images, dim=-1) if images.ndim == 2  # a locked tower's features
                      else clip.encode_image(images, normalize=True))  # pixels: the image tower trains too
    text_features = clip.encode_text(tokens, normalize=True)
    return multi_positive_loss(image_features, text_features, clip.logit_scale.exp(), matches(text_codes, codes))
