"""The bundled oracle judges freshly rendered faces correctly, and damaged files fail clearly."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from ccvae.hub import CheckpointError
from train.data.synthetic import LABEL_NAMES, render_range
from train.oracle import Oracle, degrade, load_oracle, to_tensor

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "oracle-synthetic"


@pytest.fixture(scope="module")
def oracle():
    return load_oracle(BUNDLED)


def test_bundled_oracle_reads_every_label_of_fresh_faces(oracle):
    # Faces 6000..6300 of the test split: never used to train or to measure the oracle.
    images, labels, _ = render_range(0, "test", 6000, 6300)
    assert oracle.label_names == LABEL_NAMES
    predicted = oracle.predict(to_tensor(images)).numpy()
    assert predicted.shape == labels.shape and predicted.dtype == bool
    acc = (predicted == labels.astype(bool)).mean(0)
    assert (acc >= 0.97).all(), dict(zip(LABEL_NAMES, acc.round(3)))
    # It also reads slightly blurred images, as a VAE decodes them.
    blurred = degrade(to_tensor(images), torch.Generator().manual_seed(0))
    acc_blur = (oracle.predict(blurred).numpy() == labels.astype(bool)).mean(0)
    assert acc_blur.mean() >= 0.97, dict(zip(LABEL_NAMES, acc_blur.round(3)))


def test_save_load_round_trip_and_mode(tmp_path):
    torch.manual_seed(0)
    model = Oracle(label_names=["a", "b"], image_size=32, channels=[4, 8], hidden_dim=8)
    model.save(tmp_path / "o")
    again = load_oracle(tmp_path / "o")
    x = torch.rand(3, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), again(x)) and again.label_names == ["a", "b"]
    model.train()
    model.predict(x)
    assert model.training  # predict restores the mode
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*\(3, 3, 64, 64\)"):
        model(torch.rand(3, 3, 64, 64))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]), "damaged"),
    (lambda d: (d / "model.safetensors").unlink(), "missing model.safetensors"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text(json.dumps({"label_names": ["a"]})), "does not describe an oracle"),
    (lambda d: _edit_config(d, hidden_dim=9), "does not match its config.json"),
    (lambda d: _edit_config(d, colour="blue"), "invalid oracle"),
])
def test_damaged_oracle_gives_a_clear_error(tmp_path, damage, message):
    d = tmp_path / "o"
    shutil.copytree(BUNDLED, d)
    damage(d)
    with pytest.raises(CheckpointError, match=message):
        load_oracle(d)


def _edit_config(d, **changes):
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, **changes}))
