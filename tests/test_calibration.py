"""Per-model thresholds: how they are measured, recorded, read, and what they change for users."""
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crossmodal.api.params import parse_recommend_params
from crossmodal.model.calibration import Calibration, calibration_path, load_calibration
from crossmodal.settings import CALIBRATION
from crossmodal.train.calibrate import altered_image, equal_error_threshold, novelty_threshold, off_topic_texts
from tests.harness import Server, data_uri, free_port, http_post

MODELS = Path(__file__).resolve().parents[1] / "models"
DEMO = MODELS / "demo-clip.pt"


def test_equal_error_threshold_separates_two_distributions():
    rng = np.random.default_rng(0)
    matching, other = rng.normal(0.6, 0.05, 2000), rng.normal(0.2, 0.05, 20000)  # matches are rarer
    assert equal_error_threshold(matching, other) == pytest.approx(0.4, abs=0.02)


def test_novelty_threshold_lies_between_copies_and_distinct_items():
    copies, distinct = np.linspace(0.99, 1.0, 100), np.linspace(0.5, 0.97, 100)
    assert 0.97 < novelty_threshold(copies, distinct) < 0.99
    # overlapping: distinct items stay novel (losing an interest is worse than a near-copy)
    assert novelty_threshold(np.linspace(0.9, 1.0, 100), distinct) > np.quantile(distinct, 0.99)


def test_off_topic_texts_never_use_the_worlds_words():
    vocabulary = ["circle</w>", "elephant</w>", "bicycle</w>", "ele", "x</w>"]
    texts = off_topic_texts(40, random.Random(0), vocabulary, {"circle"})
    words = {w for t in texts for w in t.split()}
    assert "circle" not in words and {"elephant", "bicycle"} <= words
    assert texts == off_topic_texts(40, random.Random(0), vocabulary, {"circle"})


def test_altered_copy_is_close_but_not_identical():
    image = Image.new("RGB", (96, 96), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 60, 60), fill=(220, 30, 30))
    copy = np.asarray(altered_image(image, random.Random(0)), dtype=int)
    diff = np.abs(copy - np.asarray(image, dtype=int))
    assert 0 < diff.mean() < 10


def test_calibration_round_trips_and_rejects_bad_values(tmp_path):
    cal = Calibration(0.99, {"text-image": 0.3, "image-image": 0.8}, {"text-image": 0.5}, True)
    assert Calibration.from_json(cal.to_json()) == cal
    assert Calibration.from_json(json.loads(cal.to_json())) == cal  # a Flow YAML may parse the JSON
    assert cal.relevance("image", "text") == cal.relevance("text", "image") == 0.3
    assert cal.relevance("text", "text") is None
    assert Calibration.from_json("") == Calibration() and not Calibration().calibrated
    with pytest.raises(ValueError, match="novelty_threshold.*1.5"):
        Calibration.from_json('{"novelty_threshold": 1.5}')
    with pytest.raises(ValueError, match="unknown pair.*audio-text"):
        Calibration.from_json('{"relevance_threshold": {"audio-text": 0.1}}')
    checkpoint = tmp_path / "m.pt"
    assert load_calibration(str(checkpoint)) == Calibration()  # none recorded: the defaults
    calibration_path(checkpoint).write_text('{"novelty_threshold": "high"}')
    with pytest.raises(ValueError, match="m.calibration.json"):
        load_calibration(str(checkpoint))


def test_request_overrides_the_models_novelty_threshold():
    assert parse_recommend_params({"username": "a"}, 0.999).novelty_threshold == 0.999
    assert parse_recommend_params({"username": "a", "novelty_threshold": 0.5}, 0.999).novelty_threshold == 0.5
    assert parse_recommend_params({"username": "a"}).novelty_threshold == CALIBRATION.novelty_threshold


def test_demo_model_records_its_calibration():
    if not DEMO.is_file():
        pytest.skip(f"{DEMO} not built yet (see models/README.md)")
    cal = load_calibration(str(DEMO))
    assert cal.calibrated and 0.9 < cal.novelty_threshold <= 1
    assert set(cal.relevance_threshold) == {"text-image", "image-image", "text-text"}


def _shapes(shape: str, rgb: tuple, seed: int) -> bytes:
    """A 96 px picture of one to three shapes, positions, size and colour varied a little."""
    rng = random.Random(seed)
    image = Image.new("RGB", (96, 96), "white")
    draw = ImageDraw.Draw(image)
    colour = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in rgb)
    for _ in range(rng.randint(1, 3)):
        r, x, y = rng.uniform(8, 14), rng.uniform(16, 80), rng.uniform(16, 80)
        (draw.ellipse if shape == "circle" else draw.rectangle)((x - r, y - r, x + r, y + r), fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


RED, BLUE, GREEN, YELLOW = (220, 30, 30), (35, 70, 220), (30, 170, 50), (245, 215, 20)


def test_two_interest_user_gets_both_interests_with_the_demo_model(tmp_path):
    """Issue 13: eight red circles and eight blue squares (slightly varied colours).

    Every other user's red circle is a new post for this person, not a copy of one of
    theirs, so both interests must come back under the model's calibrated threshold.
    """
    if not DEMO.is_file():
        pytest.skip(f"{DEMO} not built yet (see models/README.md)")
    posts = [("me", "circle", RED, i) for i in range(8)] + [("me", "square", BLUE, 10 + i) for i in range(8)]
    for n, owner in enumerate(("bob", "carol", "dave")):
        for shape, rgb in (("circle", RED), ("square", BLUE), ("circle", GREEN), ("square", YELLOW)):
            posts += [(owner, shape, rgb, 100 + 10 * n + i) for i in range(3)]
    docs = [{"id": f"{owner}-{shape}-{rgb[0]}-{seed}", "owner": owner, "modality": "image",
             "uri": data_uri(_shapes(shape, rgb, seed))} for owner, shape, rgb, seed in posts]
    with Server(tmp_path / "ws", free_port(), free_port(), "--model", "demo-clip") as server:
        status, body = http_post(server.http_port, "/index", docs)
        assert status == 200 and {d["status"] for d in body["data"]} == {"indexed"}
        status, body = http_post(server.http_port, "/stats", [])
        assert body["data"][0]["tags"]["novelty_threshold"] == load_calibration(str(DEMO)).novelty_threshold
        status, body = http_post(server.http_port, "/recommend", [{}], {"username": "me", "k": 10})
        assert status == 200, body
        picked = [m["id"] for m in body["data"][0]["from_image"]["image_matches"]]
        assert any("-circle-220-" in p for p in picked) and any("-square-35-" in p for p in picked), picked
        # the old fixed default, 0.95, took every other red circle or blue square for a copy
        status, body = http_post(server.http_port, "/recommend", [{}],
                                 {"username": "me", "k": 10, "novelty_threshold": 0.95})
        old = [m["id"] for m in body["data"][0]["from_image"]["image_matches"]]
        assert not (any("-circle-220-" in p for p in old) and any("-square-35-" in p for p in old)), old
        # the request still overrides the model: at 0.5 everything like a post of theirs is "seen"
        status, body = http_post(server.http_port, "/recommend", [{}],
                                 {"username": "me", "k": 10, "novelty_threshold": 0.5})
        strict = [m["id"] for m in body["data"][0]["from_image"]["image_matches"]]
        assert not any("-circle-220-" in p or "-square-35-" in p for p in strict), strict


def test_workspace_calibration_counts_only_for_the_model_it_measured(tmp_path):
    from crossmodal.model.calibration import find_calibration, workspace_calibration_path

    path = workspace_calibration_path(tmp_path)
    path.write_text(json.dumps({"novelty_threshold": 0.97, "measured": {"model": "tiny-clip/a.pt"}}))
    assert find_calibration(None, "tiny-clip/a.pt", tmp_path) == path
    assert load_calibration(None, "tiny-clip/a.pt", tmp_path).novelty_threshold == 0.97
    assert find_calibration(None, "tiny-clip/b.pt", tmp_path) is None  # measured for another model
    assert load_calibration(None, "tiny-clip/b.pt", tmp_path) == Calibration()
    assert find_calibration(str(DEMO), "demo-clip/x", tmp_path) == calibration_path(DEMO)  # beside the checkpoint wins
    path.write_text("{not json")
    with pytest.raises(ValueError, match="calibration.json.*delete it"):
        find_calibration(None, "tiny-clip/a.pt", tmp_path)


def _tiny_checkpoint(path: Path) -> Path:
    """A tiny-clip checkpoint with no calibration beside it, as someone's own model would come."""
    import subprocess
    import sys

    code = ("import open_clip, torch; "
            "open_clip.add_model_config('models/tiny-clip.json'); torch.manual_seed(1); "
            f"torch.save(open_clip.create_model('tiny-clip').state_dict(), {str(path)!r})")
    subprocess.run([sys.executable, "-c", code], cwd=MODELS.parent, check=True, timeout=120)
    return path


def test_a_model_without_thresholds_is_calibrated_on_first_load_only(tmp_path):
    """Issue 13: "calibrate it when a model is trained or first loaded" -- here, first loaded."""
    checkpoint = _tiny_checkpoint(tmp_path / "mine.pt")
    workspace = tmp_path / "ws"
    args = ("--model", "tiny-clip", "--pretrained", str(checkpoint))
    with Server(workspace, free_port(), free_port(), *args) as server:
        recorded = json.loads((workspace / "calibration.json").read_text())
        assert recorded["measured"]["model"].startswith("tiny-clip/mine.pt@")  # the label the workspace records
        status, body = http_post(server.http_port, "/stats", [])
        tags = body["data"][0]["tags"]
        assert tags["calibrated"] is True and tags["novelty_threshold"] == recorded["novelty_threshold"]
        assert tags["relevance_threshold"] == recorded["relevance_threshold"]
    assert "has no calibration yet" in server.log.read_text()
    with Server(workspace, free_port(), free_port(), *args) as again:  # measured once: read back, not redone
        assert http_post(again.http_port, "/stats", [])[1]["data"][0]["tags"]["calibrated"] is True
    assert "has no calibration yet" not in again.log.read_text()
    with Server(tmp_path / "ws2", free_port(), free_port(), *args, "--no-calibrate") as skipped:
        assert http_post(skipped.http_port, "/stats", [])[1]["data"][0]["tags"]["calibrated"] is False
    assert not (tmp_path / "ws2" / "calibration.json").exists()
