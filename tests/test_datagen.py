"""The generator is deterministic, its captions describe the drawing, and the layout is right."""
import csv
import hashlib
import random
from pathlib import Path

import numpy as np
import pytest

from crossmodal.train.datagen import BACKGROUNDS, COLOURS, SceneSpec, generate_dataset, render, sample_specs


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_caption_uses_proper_singular_and_plural():
    assert SceneSpec("star", "blue", "large", "one", "white").caption() == "one large blue star on a white background"
    assert SceneSpec("circle", "red", "small", "two", "grey").caption() == "two small red circles on a grey background"
    three = SceneSpec("cross", "green", "large", "three", "black")
    assert three.caption() == "three large green crosses on a black background"


def test_unknown_attribute_is_rejected_with_its_field():
    with pytest.raises(ValueError, match="colour.*pink"):
        SceneSpec("star", "pink", "large", "one", "white")


def test_render_draws_the_background_and_the_colour():
    spec = SceneSpec("square", "red", "large", "two", "black")
    pixels = np.asarray(render(spec, random.Random(0), image_size=64)).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert BACKGROUNDS["black"] in colours and COLOURS["red"] in colours
    assert colours <= {BACKGROUNDS["black"], COLOURS["red"]}  # nothing else drawn
    assert (pixels == COLOURS["red"]).all(axis=1).mean() > 0.1  # two large squares cover a good part


def test_large_shapes_cover_more_than_small_ones():
    def coverage(size):
        image = render(SceneSpec("circle", "blue", size, "one", "white"), random.Random(1), 96)
        return (np.asarray(image) == COLOURS["blue"]).all(axis=-1).mean()
    assert coverage("large") > 2 * coverage("small")


def test_sample_specs_with_distinct_captions_repeats_each_evenly():
    specs = sample_specs(100, seed=3, n_distinct=10)
    counts = {}
    for s in specs:
        counts[s.caption()] = counts.get(s.caption(), 0) + 1
    assert len(counts) == 10 and set(counts.values()) == {10}
    assert sample_specs(100, seed=3, n_distinct=10) == specs
    with pytest.raises(ValueError, match="n_distinct"):
        sample_specs(10, seed=0, n_distinct=0)


def test_dataset_layout_and_csv_columns(tmp_path):
    out = generate_dataset(tmp_path / "d", n_images=12, seed=5, n_distinct=3, owners=("ann", "ben"),
                           n_texts=4, image_size=48, progress=False)
    rows = list(csv.DictReader(open(out / "captions.csv", newline="")))
    assert list(rows[0]) == ["image", "caption", "owner"]
    assert len(rows) == 12 and len({r["caption"] for r in rows}) == 3
    assert {r["owner"] for r in rows} <= {"ann", "ben"}
    for r in rows:
        assert (out / "images" / r["image"]).is_file()
    texts = list(csv.DictReader(open(out / "texts.csv", newline="")))
    assert list(texts[0]) == ["text", "owner"] and len(texts) == 4
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(r["image"] for r in rows)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    args = dict(n_images=8, n_texts=3, image_size=48, progress=False)
    a = _digest(generate_dataset(tmp_path / "a", seed=11, **args))
    b = _digest(generate_dataset(tmp_path / "b", seed=11, **args))
    c = _digest(generate_dataset(tmp_path / "c", seed=12, **args))
    assert a == b
    assert a != c


def test_shipped_demo_set_matches_its_recipe(tmp_path):
    """data/README.md says data/demo is generate_dataset(n=300, seed=0): keep it honest."""
    shipped = Path(__file__).resolve().parents[1] / "data" / "demo"
    regenerated = generate_dataset(tmp_path / "demo", n_images=300, seed=0, progress=False)
    assert _digest(shipped) == _digest(regenerated)
