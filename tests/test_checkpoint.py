"""save_pretrained -> from_pretrained is exact, and every kind of damage is named."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ccvae import CCVAE, CheckpointError, editing
from conftest import tiny_model


@pytest.fixture
def saved(tmp_path, model):
    with torch.no_grad():
        model.prior_loc.add_(torch.randn_like(model.prior_loc))
    model.set_label_prior([0.1, 0.4, 0.8])
    model.save_pretrained(tmp_path / "m")
    return model, tmp_path / "m"


def test_roundtrip_reproduces_outputs_exactly(saved):
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["label_names"] == ["Eyeglasses", "Smiling", "Male"] and config["format_version"] == 1
    loaded = CCVAE.from_pretrained(path)
    x = torch.rand(3, 3, 16, 16)
    z = editing.encode(model, x)
    assert torch.equal(editing.encode(loaded, x), z)
    assert torch.equal(editing.decode(loaded, z), editing.decode(model, z))
    assert torch.equal(loaded.label_prior, model.label_prior)
    assert editing.traversal_range(loaded, 1) == editing.traversal_range(model, 1)
    assert loaded.config == model.config


def _edit_state(path, fn):
    state = load_file(str(path / "model.safetensors"))
    fn(state)
    save_file(state, str(path / "model.safetensors"))


def _edit_config(path, fn):
    config = json.loads((path / "config.json").read_text())
    fn(config)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("damage, message", [
    (lambda p: _edit_state(p, lambda s: s.pop("classifier_bias")), r"missing tensors \['classifier_bias'\]"),
    (lambda p: _edit_state(p, lambda s: s.update(extra=torch.zeros(2))), r"unexpected tensors \['extra'\]"),
    (lambda p: _edit_state(p, lambda s: s.update(prior_loc=torch.zeros(2, 4))), r"prior_loc has shape \(2, 4\)"),
    (lambda p: _edit_state(p, lambda s: s.update(classifier_bias=torch.full((3,), float("nan")))), "NaN or inf"),
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:1000]), "damaged"),
    (lambda p: (p / "model.safetensors").unlink(), "missing model.safetensors"),
    (lambda p: (p / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda p: _edit_config(p, lambda c: c.update(label_names=["a", "b", "c", "d"])), r"classifier_bias has shape \(3,\), the config needs \(4,\)"),
    (lambda p: _edit_config(p, lambda c: c.update(colour="blue")), r"unknown entries \['colour'\]"),
    (lambda p: _edit_config(p, lambda c: c.pop("label_names")), r"lacks required entries \['label_names'\]"),
    (lambda p: _edit_config(p, lambda c: c.update(format_version=99)), "format_version 99"),
    (lambda p: _edit_config(p, lambda c: c.update(likelihood="poisson")), "unknown likelihood 'poisson'"),
])
def test_damaged_checkpoints_give_clear_errors(saved, damage, message):
    _, path = saved
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        CCVAE.from_pretrained(path)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"holds no model: expected .*config.json \(a model folder\) or "
                                              r".*model/config.json \(a training run\)"):
        CCVAE.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        CCVAE.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="neither a model folder nor a Hugging Face Hub id"):
        CCVAE.from_pretrained(tmp_path / "nope" / "deeper")


def test_a_training_run_folder_loads_its_model(saved, tmp_path):
    model, path = saved
    run = tmp_path / "run"
    (run / "state").mkdir(parents=True)
    shutil.copytree(path, run / "model")
    loaded = CCVAE.from_pretrained(run)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_unreachable_hub_id_is_a_clear_error(tmp_path):
    # local_files_only stands in for "no network": the same error path, without waiting on a timeout
    with pytest.raises(CheckpointError, match="could not fetch 'someone/no-such-model'"):
        CCVAE.from_pretrained("someone/no-such-model", cache_dir=tmp_path, local_files_only=True)


def test_invalid_constructor_arguments_are_named():
    with pytest.raises(ValueError, match=r"latent_dim=2 is smaller than the characteristic latents need \(3 labels x characteristic_dim 1\)"):
        CCVAE(label_names=["a", "b", "c"], latent_dim=2)
    with pytest.raises(ValueError, match="image_size must be 4"):
        CCVAE(label_names=["a"], image_size=60)
    with pytest.raises(ValueError, match="duplicates"):
        CCVAE(label_names=["a", "a"])


def test_exclusive_labels_travel_with_the_weights_and_old_configs_still_load(tmp_path):
    model = tiny_model(exclusive_labels=[["Male", "Eyeglasses"]])
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["exclusive_labels"] == [["Eyeglasses", "Male"]]
    assert CCVAE.from_pretrained(tmp_path / "m").exclusive.tolist() == model.exclusive.tolist()
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["exclusive_labels"]  # a checkpoint saved before the entry existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert not CCVAE.from_pretrained(tmp_path / "m").exclusive.any()
    config["exclusive_labels"] = [["Male", "Bald"]]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="invalid model: exclusive_labels: \\['Male', 'Bald'\\]"):
        CCVAE.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("key, value, reason", [
    ("refine_channels", 16, "the refining decoder stage was removed"),
    ("refine_channels", 0, "the refining decoder stage was removed"),
    ("learn_scale", True, "the likelihood scale is always learned"),
])
def test_a_config_carrying_a_removed_entry_is_refused_by_name(saved, key, value, reason):
    """Checkpoints of earlier versions wrote refine_channels and learn_scale; loading one names the
    entry and what became of it rather than building a different decoder silently."""
    _, path = saved
    _edit_config(path, lambda c: c.update({key: value}))
    with pytest.raises(CheckpointError, match=rf"has the entry '{key}', which this ccvae no longer reads \({reason}"):
        CCVAE.from_pretrained(path)
    with pytest.raises(TypeError, match=key):
        tiny_model(**{key: value})


def test_label_gates_are_a_step_of_z_c_that_the_decoder_reads_and_they_travel_with_the_weights(tmp_path):
    model = tiny_model(label_gates=True)
    L, D = model.num_labels, model.latent_dim
    assert model.decoder.gates == L and model.decoder.project[0].in_features == D + L
    z = torch.randn(4, D)
    before = editing.decode(model, z)
    with torch.no_grad():
        model.decoder.gate_center[0] += 3.0  # the first label's step moves: its input to the decoder changes
    assert not torch.allclose(editing.decode(model, z), before)
    model.decode(z).sum().backward()
    assert model.decoder.gate_center.grad.abs().min() > 0 and model.decoder.gate_log_slope.grad.abs().min() > 0
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["label_gates"] is True
    loaded = CCVAE.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.decoder.gate_center, model.decoder.gate_center)
    with torch.no_grad():
        assert torch.equal(editing.decode(loaded, z), editing.decode(model, z))
    plain = tiny_model()
    plain.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    del config["label_gates"]  # a checkpoint saved before the entry existed
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    old = CCVAE.from_pretrained(tmp_path / "p")
    assert old.decoder.gates == 0 and old.decoder.project[0].in_features == D
    from ccvae.networks import Decoder
    with pytest.raises(ValueError, match="gates x gate_dim must be between 0 \\(none\\) and latent_dim=6, got 7 x 1"):
        Decoder(image_size=16, out_channels=3, channels=[8, 8], hidden_dim=16, latent_dim=6, gates=7)


def test_decoder_film_starts_as_the_plain_decoder_then_modulates_every_stage_and_travels(tmp_path):
    plain, model = tiny_model(), tiny_model(decoder_film=True)
    model.load_state_dict(plain.state_dict(), strict=False)  # the same weights, and film at its zero start
    D, widths = model.latent_dim, list(model.config["channels"])[::-1]
    assert model.decoder.film.out_features == 2 * sum(widths) and model.decoder.film.in_features == D
    z = torch.randn(4, D)
    with torch.no_grad():
        assert torch.allclose(model.decode(z), plain.decode(z), atol=1e-6)  # starts as the paper's decoder
    model.decode(z).square().sum().backward()
    grad = model.decoder.film.weight.grad  # rows: gamma_0 .. gamma_{n-1}, beta_0 .. beta_{n-1}
    per_stage = [g.abs().sum() for g in grad.split(widths * 2)]
    assert all(g > 0 for g in per_stage), per_stage  # every stage's scale and shift is trained
    with torch.no_grad():
        model.decoder.film.weight.normal_()
        assert not torch.allclose(model.decode(z), plain.decode(z))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["decoder_film"] is True
    loaded = CCVAE.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.decode(z))
    plain.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    del config["decoder_film"]  # a checkpoint saved before the entry existed
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    old = CCVAE.from_pretrained(tmp_path / "p")
    assert not hasattr(old.decoder, "film") and not any("film" in k for k in old.state_dict())
