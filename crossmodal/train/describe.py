"""Ways people describe a generated scene: short, partial, reordered, with synonyms.

The full caption names every attribute in one fixed grammar; people type
"red circle", "circles", "something blue" or "two yellow stars". A model trained
on the caption grammar alone does not understand those, so training texts are
drawn from here, and so is the held-out short-query evaluation (another seed,
other scenes). Each description carries the attributes it names, which is what
makes relevance exact: an image is relevant to a description iff its scene has
every attribute the description names.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping

from crossmodal.train.datagen import SHAPES, SceneSpec

ATTRIBUTES = ("count", "size", "colour", "shape", "background")
SHAPE_WORDS = {"circle": ("circle", "dot", "disc"), "square": ("square", "box", "block"),
               "triangle": ("triangle",), "star": ("star",), "cross": ("cross", "plus")}
SHAPE_ADJECTIVES = {"circle": "round"}  # "something round", "round red things"
COLOUR_WORDS = {"purple": ("purple", "violet")}
SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
COUNT_WORDS = {"one": ("one", "a single", "1"), "two": ("two", "2", "a pair of"), "three": ("three", "3")}
BACKGROUND_WORDS = {"grey": ("grey", "gray"), "black": ("black", "dark"), "white": ("white",)}
THINGS = ("things", "shapes", "objects")
# chance that a short description names each attribute (the shape most often, like people do)
MENTION = {"shape": 0.8, "colour": 0.7, "size": 0.3, "count": 0.3, "background": 0.25}


@dataclass(frozen=True)
class Description:
    """A text and the scene attributes it constrains (attribute -> value)."""

    text: str
    attributes: Mapping[str, str]

    def matches(self, spec: SceneSpec) -> bool:
        return all(getattr(spec, name) == value for name, value in self.attributes.items())


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def parse_caption(caption: str) -> SceneSpec:
    """The scene a generated caption describes (the inverse of ``SceneSpec.caption``)."""
    words = caption.split()
    if len(words) != 8 or words[4:7] != ["on", "a", words[6]] or words[7] != "background":
        raise ValueError(f"caption: {caption!r} is not a generated caption "
                         "('<count> <size> <colour> <shape(s)> on a <background> background')")
    count, size, colour, noun, background = words[0], words[1], words[2], words[3], words[6]
    shape = next((s for s in SHAPES if noun in (s, plural(s))), noun)
    return SceneSpec(shape, colour, size, count, background)


def _pick(rng: random.Random, table: Mapping[str, tuple[str, ...]], value: str) -> str:
    return rng.choice(table.get(value, (value,)))


def _chosen(rng: random.Random) -> list[str]:
    names = [a for a in ATTRIBUTES if rng.random() < MENTION[a]]
    return names or [rng.choice(("shape", "colour"))]


def _noun_phrase(spec: SceneSpec, names: list[str], rng: random.Random) -> str:
    """Adjectives (shuffled sometimes) before a noun, or the noun first: "circles, red"."""
    many = spec.count != "one" if "count" in names else rng.random() < 0.5
    adjectives = []
    if "size" in names:
        adjectives.append(_pick(rng, SIZE_WORDS, spec.size))
    if "colour" in names:
        adjectives.append(_pick(rng, COLOUR_WORDS, spec.colour))
    if "shape" in names and spec.shape in SHAPE_ADJECTIVES and rng.random() < 0.2:
        adjectives.append(SHAPE_ADJECTIVES[spec.shape])
        noun = rng.choice(THINGS) if many else "something"
    elif "shape" in names:
        word = _pick(rng, SHAPE_WORDS, spec.shape)
        noun = plural(word) if many else word
    else:
        noun = rng.choice(THINGS) if many else "something"
    if rng.random() < 0.3:
        rng.shuffle(adjectives)
    count = _pick(rng, COUNT_WORDS, spec.count) if "count" in names else ""
    if count and noun == "something":
        noun = rng.choice(("thing", "shape"))
    if not count and not many and noun != "something" and rng.random() < 0.5:
        count = "a"
    if noun == "something" and adjectives:
        phrase = f"something {' '.join(adjectives)}"
    elif adjectives and rng.random() < 0.15:
        phrase = f"{noun}, {' '.join(adjectives)}"
    else:
        phrase = " ".join([*adjectives, noun])
    if count == "a" and phrase[0] in "aeiou":
        count = "an"
    return f"{count} {phrase}".strip()


def describe(spec: SceneSpec, rng: random.Random) -> Description:
    """One random short description of ``spec`` naming a random subset of its attributes."""
    names = _chosen(rng)
    background = _pick(rng, BACKGROUND_WORDS, spec.background)
    if names == ["background"]:
        text = rng.choice((f"{background} background", f"anything on {background}"))
    else:
        text = _noun_phrase(spec, names, rng)
        if "background" in names:
            text += rng.choice((f" on a {background} background", f" on {background}"))
    return Description(text, {name: getattr(spec, name) for name in names})


def short_queries(specs: list[SceneSpec], n: int, seed: int) -> list[Description]:
    """``n`` distinct descriptions of scenes drawn from ``specs`` (evaluation query sets)."""
    if not specs:
        raise ValueError("specs: need at least one scene to describe")
    rng = random.Random(f"queries-{seed}")
    seen: dict[str, Description] = {}
    for _ in range(50 * n):
        if len(seen) == n:
            break
        found = describe(rng.choice(specs), rng)
        seen.setdefault(found.text, found)
    return list(seen.values())

