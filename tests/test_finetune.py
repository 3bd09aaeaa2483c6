"""Contrastive training on a tiny set lowers the loss and writes a standard open_clip checkpoint."""
import json

import open_clip
import pytest
import torch

from crossmodal.inputs.captions import read_captions
from crossmodal.model.resolve import ModelUnavailable
from crossmodal.train.datagen import generate_dataset
from crossmodal.train.finetune import finetune


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("shapes"), n_images=32, seed=31, image_size=48, progress=False)


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    return _train(shapes, tmp_path_factory.mktemp("trained"))


def _train(data, out, seed=0, epochs=6):
    losses = []
    path = finetune(data / "captions.csv", data / "images", "tiny-clip", None, out, epochs=epochs,
                    batch_size=8, lr=2e-3, seed=seed, on_epoch=lambda epoch, loss: losses.append(loss))
    return path, losses


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(trained):
    path, losses = trained
    assert len(losses) == 6
    assert losses[-1] < losses[0] - 0.1, losses
    assert path.name == "tiny-clip.pt"
    config = json.loads((path.parent / "tiny-clip.json").read_text())
    assert config == open_clip.get_model_config("tiny-clip")
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model = open_clip.create_model("tiny-clip", pretrained=str(path))  # open_clip's own load_checkpoint
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k].half(), state[k]) for k in state if state[k].is_floating_point())
    fresh = open_clip.create_model("tiny-clip")
    assert not torch.equal(fresh.state_dict()["text_projection"], loaded["text_projection"])


def test_fine_tuning_starts_from_the_given_checkpoint(shapes, trained, tmp_path):
    checkpoint, losses = trained
    resumed = []
    finetune(shapes / "captions.csv", shapes / "images", "tiny-clip", str(checkpoint), tmp_path,
             epochs=1, batch_size=8, lr=1e-4, seed=1, on_epoch=lambda epoch, loss: resumed.append(loss))
    assert resumed[0] < losses[0] - 0.1, (resumed, losses)


def test_same_seed_reproduces_the_run(shapes, trained, tmp_path):
    again, losses = _train(shapes, tmp_path)
    assert losses == trained[1]
    assert again.read_bytes() == trained[0].read_bytes()


def test_a_model_config_path_is_accepted_and_names_the_output(shapes, tmp_path):
    config = tmp_path / "my-clip.json"
    config.write_text(json.dumps(open_clip.get_model_config("tiny-clip")))
    path = finetune(shapes / "captions.csv", shapes / "images", str(config), "none", tmp_path / "out",
                    epochs=1, batch_size=16, lr=1e-3, seed=0)
    assert path.name == "my-clip.pt" and (tmp_path / "out" / "my-clip.json").is_file()


def test_bad_inputs_name_the_offending_field(shapes, tmp_path):
    (tmp_path / "bad.csv").write_text("file,text\na.png,a star\n")
    with pytest.raises(ValueError, match="caption"):
        read_captions(tmp_path / "bad.csv", shapes / "images")
    (tmp_path / "gone.csv").write_text("image,caption\nnope.png,a star\n")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_captions(tmp_path / "gone.csv", shapes / "images")
    with pytest.raises(ModelUnavailable, match="model"):  # the one model resolution, as serving
        finetune(shapes / "captions.csv", shapes / "images", "no-such-clip", None, tmp_path, 1, 8, 1e-3, 0)
    with pytest.raises(ValueError, match="epochs"):
        finetune(shapes / "captions.csv", shapes / "images", "tiny-clip", None, tmp_path, 0, 8, 1e-3, 0)
