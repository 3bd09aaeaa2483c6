"""Retrieval evaluation: ground truth construction, and ``app.py -t eval`` through the real Flow."""
import json

import pytest

from crossmodal.inputs.captions import read_captions
from crossmodal.train.datagen import generate_dataset
from crossmodal.train.evaluate import GroundTruth
from tests.harness import TINY_MODEL, run_app


def _rows(tmp_path, lines):
    (tmp_path / "images").mkdir()
    for image in {line.split(",")[0] for line in lines}:
        (tmp_path / "images" / image).write_bytes(b"")
    (tmp_path / "c.csv").write_text("image,caption\n" + "\n".join(lines) + "\n")
    return read_captions(tmp_path / "c.csv", tmp_path / "images")


def test_caption_relevance_links_every_image_and_text_sharing_a_caption(tmp_path):
    rows = _rows(tmp_path, ["a.png,red star", "b.png,red star", "c.png,blue cross"])
    truth = GroundTruth(rows, tmp_path / "images", "caption")
    assert [(t, rel) for _, t, rel in truth.text_queries] == [("blue cross", {"c.png"}), ("red star", {"a.png", "b.png"})]
    assert truth.image_relevant["a.png"] == {"a.png#caption0", "b.png#caption0"}


def test_pair_relevance_links_an_image_only_to_its_own_captions(tmp_path):
    rows = _rows(tmp_path, ["a.png,a dog", "a.png,a brown dog", "b.png,a dog"])
    truth = GroundTruth(rows, tmp_path / "images", "pair")
    assert {q: rel for q, _, rel in truth.text_queries} == {
        "a.png#caption0": {"a.png"}, "a.png#caption1": {"a.png"}, "b.png#caption0": {"b.png"}}
    assert truth.image_relevant["a.png"] == {"a.png#caption0", "a.png#caption1"}
    with pytest.raises(ValueError, match="relevance"):
        GroundTruth(rows, tmp_path / "images", "exact")


def test_eval_cli_through_the_flow_reports_bounded_metrics(tmp_path):
    """``app.py -t eval`` as a user runs it, in its own process.

    Running the Flow inside pytest would fork executor processes from a process
    whose torch thread pools other tests already started, which can deadlock.
    """
    data = generate_dataset(tmp_path / "d", n_images=20, seed=21, n_distinct=4, image_size=48, progress=False)
    out = tmp_path / "report.json"
    proc = run_app("-t", "eval", "--data", str(data), "--model", TINY_MODEL, "--pretrained", "none",
                   "--out", str(out), "--batch-size", "8")  # several requests per endpoint
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "text_to_image" in proc.stdout and f"{result['model']}" in proc.stdout  # the table and the summary
    assert result["images"] == 20 and result["texts"] == 20 and result["depth"] == 10
    assert result["text_to_image"]["queries"] == 4 and result["image_to_text"]["queries"] == 20
    for direction in ("text_to_image", "image_to_text"):
        for key in ("P@1", "P@5", "P@10", "R@1", "R@5", "R@10", "nDCG@10", "mAP"):
            assert 0.0 <= result[direction][key] <= 1.0
    # each caption has 5 images, so P@5 == R@5 for text->image; both are real counts of hits
    assert result["text_to_image"]["P@5"] == pytest.approx(result["text_to_image"]["R@5"])


def test_short_queries_are_relevant_to_every_image_with_their_attributes(tmp_path):
    from crossmodal.train.describe import parse_caption
    from crossmodal.train.evaluate import ShortQueryTruth, short_query_truth

    data = generate_dataset(tmp_path / "d", n_images=40, seed=23, n_distinct=4, image_size=48, progress=False)
    rows = read_captions(data / "captions.csv", data / "images")
    truth = ShortQueryTruth(rows, data / "images", n=30, seed=1, depth=10)
    scenes = {p.name: parse_caption(c) for p, c in rows}
    assert truth.text_queries and all(len(rel) >= 10 for _, _, rel in truth.text_queries)
    from crossmodal.train.describe import short_queries
    by_text = {d.text: d for d in short_queries(sorted(set(scenes.values()), key=str), 30, 1)}
    for query_id, text, relevant in truth.text_queries:
        assert relevant == {i for i, s in scenes.items() if by_text[text].matches(s)}
        assert all(query_id in truth.image_relevant[i] for i in relevant)
    assert short_query_truth(rows, data / "images", "pair", 10, 30, 1) is None  # Flickr-style: scenes unknown
    flickr = [(p, "a dog runs") for p, _ in rows]
    assert short_query_truth(flickr, data / "images", "caption", 10, 30, 1) is None
