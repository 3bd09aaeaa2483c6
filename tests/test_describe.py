"""Short descriptions are drawn from the scene, name only what it shows, and carry exact relevance."""
import random

import open_clip
import pytest

from crossmodal.model.resolve import register_local_configs
from crossmodal.train.datagen import all_specs, sample_specs
from crossmodal.train.describe import Description, describe, parse_caption, short_queries


def test_every_description_matches_the_scene_it_was_drawn_from():
    rng = random.Random(5)
    for spec in sample_specs(500, seed=5):
        found = describe(spec, rng)
        assert found.attributes and found.matches(spec), (spec, found)


def test_descriptions_are_varied_short_and_fit_the_demo_context():
    rng = random.Random(6)
    texts = [describe(spec, rng).text for spec in sample_specs(2000, seed=6)]
    assert len(set(texts)) > 800
    # the forms people type: partial, synonyms, plural, reordered
    for expected in ("something blue", "circles", "boxes", "red circle", "something round"):
        assert any(t == expected or t.endswith(" " + expected) for t in texts), expected
    assert any(", " in t for t in texts)  # "circles, red": reordered
    register_local_configs()
    tokens = open_clip.get_tokenizer("demo-clip")(texts)
    assert (tokens[:, -1] == 0).float().mean() > 0.99  # nearly all fit the 12-token context


def test_relevance_is_every_named_attribute():
    circle = parse_caption("two small red circles on a grey background")
    square = parse_caption("one large red square on a black background")
    red_circle = Description("a red circle", {"colour": "red", "shape": "circle"})
    assert red_circle.matches(circle) and not red_circle.matches(square)
    assert Description("something red", {"colour": "red"}).matches(square)


def test_parse_caption_inverts_the_caption_and_rejects_other_text():
    assert all(parse_caption(s.caption()) == s for s in all_specs())
    with pytest.raises(ValueError, match="caption: 'a dog on the beach'"):
        parse_caption("a dog on the beach")


def test_short_queries_are_distinct_and_seeded():
    specs = sample_specs(50, seed=7)
    first, again, other = short_queries(specs, 40, 1), short_queries(specs, 40, 1), short_queries(specs, 40, 2)
    assert [d.text for d in first] == [d.text for d in again] != [d.text for d in other]
    assert len({d.text for d in first}) == len(first) == 40
    assert all(any(d.matches(s) for s in specs) for d in first)
