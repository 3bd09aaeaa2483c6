"""Model resolution: the default falls back to the demo model, an explicit choice never does."""
import logging

import pytest

from crossmodal.model.resolve import ModelUnavailable, resolve
from tests.harness import run_app


def test_default_model_falls_back_to_the_demo_model_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="crossmodal.model.resolve"):
        spec = resolve(cache_dir=str(tmp_path))  # an empty cache: no ViT-B-32/openai here
    assert spec.name == "demo-clip" and spec.fallback
    assert spec.checkpoint.endswith("models/demo-clip.pt")
    assert "ViT-B-32/openai are not on this machine" in caplog.text
    assert "demo model" in caplog.text and "--model/--pretrained" in caplog.text


def test_an_explicit_model_never_falls_back(tmp_path):
    with pytest.raises(ModelUnavailable, match=r"ViT-B-32/openai .*--pretrained /path/to/checkpoint"):
        resolve("ViT-B-32", "openai", cache_dir=str(tmp_path))


def test_unknown_tag_and_missing_pretrained_say_what_to_pass():
    with pytest.raises(ModelUnavailable, match="known tags: .*openai"):
        resolve("ViT-B-32", "no-such-tag")
    with pytest.raises(ModelUnavailable, match="--pretrained is required for ViT-B-32"):
        resolve("ViT-B-32")


def test_local_checkpoint_and_random_weights_resolve_without_network(tmp_path):
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"")
    assert resolve("ViT-B-32", str(checkpoint)).checkpoint == str(checkpoint)
    assert resolve("tiny-clip", "none").checkpoint is None


def test_retrained_weights_under_the_same_name_are_another_model(tmp_path):
    """The label a workspace records names the checkpoint's bytes, so old embeddings are
    never mixed with those of weights retrained under the same file name."""
    from crossmodal.index.store import Store, WorkspaceError

    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"first training run")
    before = resolve("tiny-clip", str(checkpoint)).label
    assert before.startswith("tiny-clip/weights.pt@") and before == resolve("tiny-clip", str(checkpoint)).label
    store = Store(tmp_path / "ws")
    store.bind_model(before, 32)
    checkpoint.write_bytes(b"second training run")
    after = resolve("tiny-clip", str(checkpoint)).label
    assert after != before
    with pytest.raises(WorkspaceError, match="retrained under the same file name"):
        store.bind_model(after, 32)
    store.close()


def test_cli_reports_missing_weights_as_one_clear_line(tmp_path):
    (tmp_path / "posts.txt").write_text("something to index\n")  # an empty folder is refused before the model
    done = run_app("-t", "index", "--data", str(tmp_path), "--workspace", str(tmp_path / "ws"),
                   "--model", "ViT-B-32", "--pretrained", "openai", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: pretrained weights ViT-B-32/openai")
    assert "Traceback" not in done.stderr
