"""Deterministic generator of captioned shape images.

Real captioned photos (and CLIP weights that understand them) are not available
offline, so the demo data, the tests and the demo model all use synthetic scenes
whose captions are exact functions of what is drawn. That makes relevance
unambiguous: two images are relevant to each other iff their captions are equal.
Everything is driven by one seed, so the same arguments produce byte-identical
files on every machine.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw
from tqdm import tqdm

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (35, 70, 220),
    "yellow": (245, 215, 20), "purple": (140, 50, 180), "orange": (250, 140, 20),
}
BACKGROUNDS = {"white": (255, 255, 255), "grey": (128, 128, 128), "black": (0, 0, 0)}
SIZES = {"small": 0.16, "large": 0.30}  # shape diameter as a fraction of the image side
COUNTS = {"one": 1, "two": 2, "three": 3}
PLURALS = {"cross": "crosses"}
DEFAULT_OWNERS = ("alice", "bob", "carol", "dave")
TEXT_TEMPLATES = (
    "I love drawing {colour} {shapes}",
    "{colour} {shapes} remind me of my childhood",
    "my favourite shape is the {shape}",
    "a {background} background makes {colour} stand out",
    "I collect {size} {colour} {shapes}",
    "nothing beats a {size} {shape}",
)


@dataclass(frozen=True)
class SceneSpec:
    """What one image shows; the caption is derived from it and nothing else."""

    shape: str
    colour: str
    size: str
    count: str
    background: str

    def __post_init__(self) -> None:
        for field_name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES),
                                    ("count", COUNTS), ("background", BACKGROUNDS)):
            value = getattr(self, field_name)
            if value not in allowed:
                raise ValueError(f"SceneSpec.{field_name}: {value!r} is not one of {sorted(allowed)}")

    def caption(self) -> str:
        noun = self.shape if self.count == "one" else PLURALS.get(self.shape, self.shape + "s")
        return f"{self.count} {self.size} {self.colour} {noun} on a {self.background} background"


def all_specs() -> list[SceneSpec]:
    """Every distinct scene, in a fixed order (sampling from it keeps seeds portable)."""
    return [SceneSpec(*combo) for combo in itertools.product(SHAPES, COLOURS, SIZES, COUNTS, BACKGROUNDS)]


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        angles, radii = [-90, 30, 150], [r, r, r]
    elif shape == "star":
        angles = [-90 + 36 * i for i in range(10)]
        radii = [r if i % 2 == 0 else r * 0.45 for i in range(10)]
    else:
        raise ValueError(f"shape: no polygon for {shape!r}")
    return [(cx + rad * math.cos(math.radians(a)), cy + rad * math.sin(math.radians(a)))
            for a, rad in zip(angles, radii)]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float,
                fill: tuple[int, int, int]) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        side = r * 0.85  # same visual weight as the circle
        draw.rectangle((cx - side, cy - side, cx + side, cy + side), fill=fill)
    elif shape == "cross":
        arm = r * 0.33
        draw.rectangle((cx - r, cy - arm, cx + r, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - r, cx + arm, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=fill)


def _place(rng: random.Random, n: int, r: float, side: int, tries: int = 200) -> list[tuple[float, float]]:
    """Random centres whose discs do not overlap (best effort after ``tries``)."""
    centres: list[tuple[float, float]] = []
    for _ in range(n):
        for attempt in range(tries):
            c = (rng.uniform(r + 1, side - r - 1), rng.uniform(r + 1, side - r - 1))
            if all(math.dist(c, o) > 2 * r + 2 for o in centres) or attempt == tries - 1:
                centres.append(c)
                break
    return centres


def render(spec: SceneSpec, rng: random.Random, image_size: int = 96) -> Image.Image:
    """Draw ``spec`` at random, non-overlapping positions; positions are not in the caption."""
    if image_size < 32:
        raise ValueError(f"image_size: {image_size} is too small to draw three shapes (min 32)")
    image = Image.new("RGB", (image_size, image_size), BACKGROUNDS[spec.background])
    draw = ImageDraw.Draw(image)
    radius = SIZES[spec.size] * image_size / 2 * rng.uniform(0.9, 1.1)
    for cx, cy in _place(rng, COUNTS[spec.count], radius, image_size):
        _draw_shape(draw, spec.shape, cx, cy, radius, COLOURS[spec.colour])
    return image


def sample_specs(n: int, seed: int, n_distinct: Optional[int] = None) -> list[SceneSpec]:
    """``n`` scenes; with ``n_distinct``, only that many captions, each used ~n/n_distinct times.

    Repeating captions is what makes caption-match retrieval metrics meaningful:
    Precision@10 needs at least 10 relevant images per query caption.
    """
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    rng = random.Random(seed)
    pool = all_specs()
    if n_distinct is None:
        return [rng.choice(pool) for _ in range(n)]
    if not 1 <= n_distinct <= len(pool):
        raise ValueError(f"n_distinct: must be in [1, {len(pool)}], got {n_distinct}")
    chosen = rng.sample(pool, n_distinct)
    specs = [chosen[i % n_distinct] for i in range(n)]
    rng.shuffle(specs)
    return specs


def _texts(rng: random.Random, n: int, owners: Sequence[str]) -> list[tuple[str, str]]:
    rows = []
    for _ in range(n):
        shape = rng.choice(SHAPES)
        text = rng.choice(TEXT_TEMPLATES).format(
            colour=rng.choice(list(COLOURS)), shape=shape, shapes=PLURALS.get(shape, shape + "s"),
            size=rng.choice(list(SIZES)), background=rng.choice(list(BACKGROUNDS)))
        rows.append((text, rng.choice(owners)))
    return rows


def generate_dataset(out_dir: Path, n_images: int, seed: int, n_distinct: Optional[int] = None,
                     owners: Sequence[str] = DEFAULT_OWNERS, n_texts: Optional[int] = None,
                     image_size: int = 96, progress: bool = True, descriptions: int = 0) -> Path:
    """Write ``images/*.png``, ``captions.csv`` (image,caption,owner) and ``texts.csv`` (text,owner).

    ``n_texts`` defaults to a quarter of ``n_images``. ``descriptions`` adds that many
    rows per image with short descriptions of its scene (``describe``): training data
    for a model that understands what people type. Returns ``out_dir``.
    """
    from crossmodal.train.describe import describe

    if not owners:
        raise ValueError("owners: need at least one owner")
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    specs = sample_specs(n_images, seed, n_distinct)
    rng = random.Random(f"render-{seed}")  # independent of spec sampling: same scenes, any image_size
    describe_rng = random.Random(f"describe-{seed}")  # the images stay the same with or without descriptions
    width = max(5, len(str(n_images)))
    with open(out_dir / "captions.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "caption", "owner"])
        for i, spec in enumerate(tqdm(specs, desc="render", unit="img", disable=not progress)):
            name = f"img_{i:0{width}d}.png"
            render(spec, rng, image_size).save(images_dir / name, format="PNG", optimize=True)
            owner = rng.choice(owners)
            writer.writerow([name, spec.caption(), owner])
            writer.writerows([name, describe(spec, describe_rng).text, owner] for _ in range(descriptions))
    with open(out_dir / "texts.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "owner"])
        writer.writerows(_texts(rng, n_images // 4 if n_texts is None else n_texts, owners))
    return out_dir


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Generate a captioned shapes dataset.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distinct", type=int, default=None, help="number of distinct captions")
    parser.add_argument("--texts", type=int, default=None, help="standalone texts (default n/4)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--descriptions", type=int, default=0,
                        help="extra rows per image with short descriptions of its scene (training data)")
    parser.add_argument("--owners", default=",".join(DEFAULT_OWNERS), help="comma-separated owners")
    args = parser.parse_args(argv)
    owners = [o for o in args.owners.split(",") if o]
    generate_dataset(args.out, args.n, args.seed, args.distinct, owners, args.texts, args.image_size,
                     descriptions=args.descriptions)
    n_captions = len({s.caption() for s in sample_specs(args.n, args.seed, args.distinct)})
    print(f"wrote {args.n} images ({n_captions} distinct captions) to {args.out} (seed {args.seed})")


if __name__ == "__main__":
    main()
