"""Measure a model's near-duplicate and relevance thresholds on held-out generated scenes.

* Near-duplicate (novelty): an item against lightly altered copies of itself
  (JPEG re-encoding, a slight resize, a few levels of colour noise; for texts,
  case, spacing and punctuation) versus every distinct item, including other
  renderings of the same scene: someone else's red circle is a new post, not a
  copy. The threshold sits between the two distributions.
* Relevance, per pair of modalities: matching versus non-matching pairs
  (text-image: the image has every attribute the description names; image-image:
  the same scene; text-text: descriptions naming the same attributes). The
  threshold is the equal-error point, where as many matches fall below it as
  non-matches rise above it, so it does not depend on how rare matches are.
  The "close" threshold is the median match, or halfway from the relevance line to the
  90th percentile of matches if that is higher: the page says "close match" above it
  and "likely match" between the two.
* Off-topic queries (random words from the tokenizer's vocabulary, letter salad;
  noise images) match nothing in this world. The relevance threshold is raised, if
  need be, above the best result of most of them (``CALIBRATION.off_topic_quantile``), so
  that nonsense mostly gets "no close match".

``python -m crossmodal.train.calibrate --model demo-clip`` writes
``<checkpoint>.calibration.json``; ``finetune`` runs it after training, and a service
runs it with ``--out <workspace>/calibration.json`` the first time it loads a model that
came without one (``serve.flow.ensure_calibration``).
"""
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from crossmodal.model.calibration import Calibration, calibration_path
from crossmodal.settings import CALIBRATION
from crossmodal.train.datagen import render, sample_specs
from crossmodal.train.describe import describe


def altered_image(image: Image.Image, rng: random.Random) -> Image.Image:
    """The same picture as a re-upload would give it: resized a little, JPEG, colour noise."""
    side = image.width
    small = image.resize((side - rng.randint(2, 6),) * 2, Image.BILINEAR).resize((side, side), Image.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=rng.randint(70, 90))
    pixels = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.int16)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(-4, 5, size=pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def altered_text(text: str, rng: random.Random) -> str:
    variants = (text.capitalize(), text.upper(), f"  {text}.", text.replace(" ", "  "))
    return rng.choice(variants)


def off_topic_texts(n: int, rng: random.Random, vocabulary: Sequence[str], known: set[str]) -> list[str]:
    """Random words of the tokenizer's vocabulary that the generated world never uses, and letter salad."""
    words = sorted(w[:-4] for w in vocabulary if w.endswith("</w>") and len(w) > 6
                   and w[:-4].isascii() and w[:-4].isalpha() and w[:-4] not in known)
    salad = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))  # noqa: E731
    return [" ".join(rng.choice(words) if i % 2 else salad() for _ in range(rng.randint(1, 4))) for i in range(n)]


def noise_image(rng: random.Random, side: int = 96) -> Image.Image:
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, size=(side // 8, side // 8, 3))
    return Image.fromarray(pixels.astype(np.uint8)).resize((side, side), Image.NEAREST)


def equal_error_threshold(matching: np.ndarray, other: np.ndarray) -> float:
    """The score where the share of matches below it equals the share of non-matches above it."""
    candidates = np.unique(np.concatenate([matching, other]))
    miss = np.searchsorted(np.sort(matching), candidates, side="left") / len(matching)
    false = 1 - np.searchsorted(np.sort(other), candidates, side="left") / len(other)
    return float(candidates[np.argmin(np.abs(miss - false))])


def novelty_threshold(copies: np.ndarray, distinct_nearest: np.ndarray) -> float:
    """Midway between the lowest copies (1st percentile) and the closest distinct items (99th);
    when they overlap, just above the distinct items: losing an interest is worse than
    seeing a near-copy."""
    low_copy = float(np.quantile(copies, 0.01))
    high_distinct = float(np.quantile(distinct_nearest, 0.99))
    threshold = (low_copy + high_distinct) / 2 if low_copy > high_distinct else high_distinct + 1e-4
    return float(min(threshold, 1.0))


def _nearest_other(emb: np.ndarray) -> np.ndarray:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


def _pairs(sims: np.ndarray, match: np.ndarray, skip_diagonal: bool) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.eye(*sims.shape, dtype=bool) if skip_diagonal else np.ones(sims.shape, bool)
    return sims[match & keep], sims[~match & keep]


def _encode(encode, tower, items: list, bar: tqdm, chunk: int = 64) -> np.ndarray:
    """``encode(tower, items)`` in chunks, so a large model's minutes of encoding show progress."""
    out = []
    for start in range(0, len(items), chunk):
        out.append(encode(tower, items[start:start + chunk]))
        bar.update(len(items[start:start + chunk]))
    return np.concatenate(out) if out else encode(tower, items)  # none: an empty (0, dim) array


def _summary(values: np.ndarray) -> dict:
    return {q: round(float(np.quantile(values, p)), 4)
            for q, p in (("p01", 0.01), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


def measure(model: Optional[str], pretrained: Optional[str], seed: int = CALIBRATION.seed,
            n_images: int = CALIBRATION.images, n_texts: int = CALIBRATION.texts,
            device: str = "auto") -> tuple[Calibration, dict]:
    """The calibration and the distributions it was read from."""
    from crossmodal.model.encode import encode_images, encode_texts
    from crossmodal.model.resolve import resolve
    from crossmodal.model.towers import load_towers

    spec = resolve(model, pretrained)
    rng = random.Random(f"calibrate-{seed}")
    scenes = sample_specs(n_images, seed)
    images = [render(s, rng) for s in tqdm(scenes, desc="render", unit="img")]
    copies = [altered_image(im, rng) for im in images]
    redrawn = [render(s, rng) for s in scenes]  # the same scene drawn anew: someone else's post
    descriptions = [describe(rng.choice(scenes), rng) for _ in range(n_texts)]
    texts = [d.text for d in descriptions]
    noise = [noise_image(rng) for _ in range(n_images // 4)]
    altered = [altered_text(t, rng) for t in texts]
    with tqdm(total=3 * n_images + len(noise) + 2 * n_texts + n_texts // 4, desc=f"calibrate {spec.label}",
              unit="item") as bar:
        text_tower, image_tower = load_towers(spec, device)  # one checkpoint read for both
        img, img_copy, img_redrawn, img_noise = (_encode(encode_images, image_tower, batch, bar)
                                                 for batch in (images, copies, redrawn, noise))
        del image_tower
        known = {w for d in descriptions for w in d.text.split()} | {w for s in scenes for w in s.caption().split()}
        off = off_topic_texts(n_texts // 4, rng, list(text_tower.transform.vocabulary), known)
        txt, txt_copy, txt_off = (_encode(encode_texts, text_tower, batch, bar)
                                  for batch in (texts, altered, off))
    image_copies, text_copies = (img * img_copy).sum(1), (txt * txt_copy).sum(1)
    copy_sims = np.concatenate([image_copies, text_copies])
    same_text = np.array([[a == b for b in texts] for a in texts])
    same_meaning = np.array([[a.attributes == b.attributes for b in descriptions] for a in descriptions])
    txt_nearest = np.where(same_meaning, -np.inf, txt @ txt.T).max(axis=1)  # "a red dot" is "red circle" again
    img_nearest = np.maximum(_nearest_other(img), (img * img_redrawn).sum(1))
    distinct = np.concatenate([img_nearest, txt_nearest])
    match_ti = np.array([[d.matches(s) for s in scenes] for d in descriptions])
    match_ii = np.array([[a == b for b in scenes] for a in scenes])
    match_tt = np.array([[set(a.attributes.items()) == set(b.attributes.items()) for b in descriptions]
                         for a in descriptions])
    pairs = {"text-image": _pairs(txt @ img.T, match_ti, False),
             "image-image": _pairs(img @ img.T, match_ii, True),
             "text-text": _pairs(txt @ txt.T, match_tt & ~same_text, True)}
    pairs = {k: (m, o) for k, (m, o) in pairs.items() if len(m) and len(o)}
    off_topic = {"text-image": (txt_off @ img.T).max(1), "image-image": (img_noise @ img.T).max(1),
                 "text-text": (txt_off @ txt.T).max(1)}
    quantile = CALIBRATION.off_topic_quantile
    relevance = {k: round(max(equal_error_threshold(m, o), float(np.quantile(off_topic[k], quantile))), 4)
                 for k, (m, o) in pairs.items()}
    # "close": the median match, and at least halfway from the relevance line to the 90th percentile
    close = {k: round(max(float(np.median(m)), (relevance[k] + float(np.quantile(m, 0.9))) / 2), 4)
             for k, (m, _) in pairs.items()}
    calibration = Calibration(round(novelty_threshold(copy_sims, distinct), 4), relevance, close, True)
    report = {"model": spec.label, "seed": seed, "images": n_images, "texts": n_texts,
              "altered image copy": _summary(image_copies), "altered text copy": _summary(text_copies),
              "nearest distinct image": _summary(distinct[:len(img)]),
              "nearest distinct text": _summary(distinct[len(img):]),
              **{f"{k} matching": _summary(m) for k, (m, _) in pairs.items()},
              **{f"{k} non-matching": _summary(o) for k, (_, o) in pairs.items()},
              **{f"{k} off-topic best": _summary(v) for k, v in off_topic.items()},
              **{f"{k} equal-error": round(equal_error_threshold(m, o), 4) for k, (m, o) in pairs.items()},
              "altered copies caught": round(float((copy_sims >= calibration.novelty_threshold).mean()), 3),
              "distinct items dropped": round(float((distinct >= calibration.novelty_threshold).mean()), 3)}
    return calibration, report


def write(calibration: Calibration, report: dict, checkpoint: str | Path, out: Optional[Path] = None) -> Path:
    """``<checkpoint>.calibration.json`` (or ``out``): the thresholds plus what they were
    measured on. Written whole, then renamed: a reader never sees half a file."""
    path = Path(out) if out is not None else calibration_path(checkpoint)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({**json.loads(calibration.to_json()), "measured": report}, indent=2) + "\n")
    partial.replace(path)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Calibrate a model's novelty and relevance thresholds.")
    parser.add_argument("--model", default="demo-clip")
    parser.add_argument("--pretrained", default=None, help="checkpoint (default models/<model>.pt)")
    parser.add_argument("--seed", type=int, default=CALIBRATION.seed)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: beside the checkpoint)")
    parser.add_argument("--images", type=int, default=CALIBRATION.images, help="scenes rendered")
    parser.add_argument("--texts", type=int, default=CALIBRATION.texts, help="descriptions written")
    args = parser.parse_args(argv)
    from crossmodal.model.resolve import resolve

    spec = resolve(args.model, args.pretrained)
    if spec.checkpoint is None:
        raise SystemExit(f"--pretrained: {spec.label} has random weights: there is nothing to calibrate")
    calibration, report = measure(args.model, args.pretrained, args.seed, args.images, args.texts, args.device)
    path = write(calibration, report, spec.checkpoint, args.out)
    print(f"calibrated {spec.label}: novelty_threshold {calibration.novelty_threshold}, "
          f"relevance {calibration.relevance_threshold} -> {path}")


if __name__ == "__main__":
    main()
