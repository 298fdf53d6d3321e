"""The factor reader and the ground-truth diversity metrics (characteristic_coverage, style_kept)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ccvae.distributions import DiagonalGaussian
from ccvae.hub import CheckpointError
from train.data.synthetic import FACTOR_NAMES, FACTOR_SHOWN_WHEN, LABEL_NAMES, render_range
from train.factor_reader import (BOOSTED, FactorReader, factor_specs, load_factor_reader, main, parse_args, quality,
                                 shown_mask, training_faces)
from train.factors import characteristic_metrics, kind_spread, own_factors, spread
from train.oracle import to_tensor

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "factor-oracle-synthetic"


# ---- which factors each label owns -----------------------------------------------------------------

def test_every_characteristic_factor_belongs_to_the_label_it_is_drawn_under():
    own = own_factors()
    for f, (label, value) in FACTOR_SHOWN_WHEN.items():
        if label == "Bald":   # hair_length shows when Bald = 0, the side a Bald resample never draws
            assert all(f not in fs for _, fs in own.values())
            continue
        assert own[label] == (value, own[label][1]) and f in own[label][1], (f, label, value)
    assert "Male" not in own and "Bald" not in own
    assert own["No_Beard"][0] == 0 and own["Smiling"][1] == ("smile", "mouth_width")
    assert all(set(fs) <= set(FACTOR_NAMES) for _, fs in own.values())
    assert not any("hair_class" in fs for _, fs in own.values())


def test_shown_mask_follows_the_labels():
    labels = np.array([[1, 0], [0, 1]])   # Eyeglasses, No_Beard
    mask = shown_mask(labels, ["Eyeglasses", "No_Beard"], ["glasses_tint", "beard_length", "pos_x", "hat_hue"])
    assert mask.tolist() == [[True, True, True, False], [False, False, True, False]]   # no Wearing_Hat label: never shown


# ---- spreads and quality ---------------------------------------------------------------------------

def test_kind_spread_counts_the_kinds_reached_beyond_one():
    readings = np.array([[0, 0, 0, 0], [0, 1, 0, 1], [2, 1, 0, 2], [0, 3, 3, 3]])
    # one kind: 0; two of three: 1/2; all three: 1; a kind the data never shows counts for nothing
    assert kind_spread(readings, [0, 1, 2]).tolist() == [0.0, 0.5, 1.0, 0.0]
    assert kind_spread(readings[:2], [0, 1]).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match=r"at least two kinds.*\[1\]"):
        kind_spread(readings, [1])


def test_circular_spread_wraps_around_and_is_sqrt2_for_uniform_angles():
    hue = {"kind": "circular", "period": 1.0}
    near_zero = np.array([0.98, 0.99, 0.01, 0.02])      # close colours across the wrap
    assert spread(hue, near_zero) < 0.15 < spread({"kind": "linear"}, near_zero)
    rng = np.random.default_rng(0)
    uniform = rng.random((2000, 16))
    a = uniform * 2 * math.pi
    uncorrected = np.sqrt(2 * (1 - np.hypot(np.cos(a).mean(1), np.sin(a).mean(1)))).mean()   # ~1.25 at R = 16
    assert uncorrected + 0.05 < spread(hue, uniform).mean() and abs(spread(hue, uniform).mean() - math.sqrt(2)) < 0.1
    assert abs(float(spread(hue, rng.random(5000))) - math.sqrt(2)) < 0.02
    angle = {"kind": "circular", "period": 2 * math.pi}
    assert np.isclose(spread(angle, near_zero * 2 * math.pi), spread(hue, near_zero))


def test_quality_is_one_when_perfect_and_about_zero_by_chance():
    rng = np.random.default_rng(0)
    t = rng.random(1000)
    for spec in ({"kind": "linear"}, {"kind": "circular", "period": 1.0}):
        assert quality(spec, t, t) == pytest.approx(1.0)
        assert quality(spec, rng.random(1000), t) < 0.05
    kinds = {"kind": "categorical", "classes": 3}
    k = rng.integers(0, 3, 3000)
    assert quality(kinds, k, k) == pytest.approx(1.0)
    assert abs(quality(kinds, rng.integers(0, 3, 3000), k)) < 0.05


# ---- the metrics on a fake model and reader whose behaviour is known --------------------------------
# The images are 32x32 mosaics of 8x8 blocks, one per factor, filled with the factor's value
# (kinds as k / 2); the reader reads the middle of each block, which the training blur leaves alone.

FAKE_FACTORS = [{"name": "glasses_shape", "kind": "linear"}, {"name": "glasses_hue", "kind": "circular", "period": 1.0},
                {"name": "hat_style", "kind": "categorical", "classes": 3}, {"name": "scale", "kind": "linear"},
                {"name": "bg_hue", "kind": "circular", "period": 1.0}]


def _mosaic(values: torch.Tensor) -> torch.Tensor:
    """(B, 5) values in [0, 1] -> (B, 3, 32, 32) images."""
    x = torch.zeros(values.shape[0], 3, 32, 32)
    for j in range(values.shape[1]):
        r, c = divmod(j, 4)
        x[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] = values[:, j, None, None, None]
    return x


class MosaicReader(FactorReader):
    def __init__(self):
        super().__init__(factors=FAKE_FACTORS, image_size=32, channels=(4,), hidden_dim=4)

    @torch.no_grad()
    def read(self, x, *, batch_size=512):
        v = torch.stack([x[:, :, 8 * r + 3:8 * r + 5, 8 * c + 3:8 * c + 5].mean((1, 2, 3))
                         for r, c in (divmod(j, 4) for j in range(len(FAKE_FACTORS)))], 1)
        v[:, 2] = (v[:, 2] * 2).round()            # hat_style kind
        v[:, [1, 4]] = v[:, [1, 4]].remainder(1.0)
        return v


class MosaicModel(nn.Module):
    """Labels Eyeglasses (z_0) and Wearing_Hat (z_1), style z_2 (scale), z_3 (bg_hue).
    Decoder: glasses_shape = sigmoid(z_0), glasses_hue = 0.3 z_0 mod 1, hat_style = 0/1/2 as z_1 < 0.5 /
    < 1.5 / above, scale = sigmoid(z_2), bg_hue = z_3 mod 1. The encoder inverts it (z_0 from the shape).
    uses_z0=False: a decoder that ignores z_0 (glasses always the same)."""

    label_names = ["Eyeglasses", "Wearing_Hat"]
    num_labels = 2
    characteristic_dim = 1
    kind_directions = 0  # no kinds fitted: a resample redraws z_i only
    classifier_weight, classifier_bias = torch.ones(2), torch.zeros(2)  # present where z_i >= 0

    def __init__(self, uses_z0=True):
        super().__init__()
        self.uses_z0 = uses_z0
        self.anchor = nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.anchor.device

    @property
    def exclusive(self):
        return torch.zeros(2, 2, dtype=torch.bool)

    def label_index(self, name):
        return self.label_names.index(name) if isinstance(name, str) else int(name)

    def block(self, name):
        i = self.label_index(name)
        return slice(i, i + 1)

    def prior_params(self):
        return torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), torch.ones(2, 2)

    def encode(self, x):
        v = torch.stack([x[:, 0, 8 * r + 4, 8 * c + 4] for r, c in (divmod(j, 4) for j in range(5))], 1)
        logit = lambda p: torch.log(p.clamp(1e-4, 1 - 1e-4) / (1 - p.clamp(1e-4, 1 - 1e-4)))  # noqa: E731
        z = torch.stack([logit(v[:, 0]), (v[:, 2] * 2).round(), logit(v[:, 3]), v[:, 4]], 1)
        return DiagonalGaussian(z, torch.ones_like(z))

    def decode(self, z):
        z0 = z[:, 0] if self.uses_z0 else torch.zeros_like(z[:, 0])
        kind = (z[:, 1] >= 0.5).float() + (z[:, 1] >= 1.5).float()
        return _mosaic(torch.stack([torch.sigmoid(z0), (0.3 * z0).remainder(1.0), kind / 2,
                                    torch.sigmoid(z[:, 2]), z[:, 3].remainder(1.0)], 1))


def _fake_test_set(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n, 2))
    f = {"glasses_shape": rng.uniform(0.05, 0.95, n), "glasses_hue": rng.random(n), "hat_style": rng.integers(0, 3, n).astype(float),
         "scale": rng.uniform(0.05, 0.95, n), "bg_hue": rng.random(n)}
    values = torch.tensor(np.stack([f[s["name"]] for s in FAKE_FACTORS], 1), dtype=torch.float32)
    values[:, 2] /= 2
    images = (_mosaic(values).permute(0, 2, 3, 1) * 255).round().byte().numpy()
    return images, labels, f


def test_resampling_only_the_characteristic_covers_it_and_keeps_the_rest():
    images, labels, f = _fake_test_set()
    out = characteristic_metrics(MosaicModel(), MosaicReader(), images, labels, f, n=120, resamples=16)
    assert set(out["characteristic_coverage"]) == {"Eyeglasses", "Wearing_Hat"}
    glasses = out["characteristic_factors"]["Eyeglasses"]
    assert set(glasses["own"]) == {"glasses_shape", "glasses_hue"} and glasses["own_unreadable"] == []
    assert 0.3 < out["characteristic_coverage"]["Eyeglasses"] < 1.2
    assert out["characteristic_factors"]["Wearing_Hat"]["own"]["hat_style"] > 0.9   # nearly every face sees all 3 kinds
    assert out["style_kept"] == pytest.approx({"Eyeglasses": 1.0, "Wearing_Hat": 1.0}, abs=1e-6)   # nothing else moved
    assert out["style_kept_mean"] == pytest.approx(1.0, abs=1e-6) and out["factors_unreadable"] == []
    assert glasses["faces"] == int((labels[:120, 0] == 1).sum())


def test_a_decoder_that_ignores_z_i_covers_nothing_and_leaking_costs_style():
    images, labels, f = _fake_test_set()
    out = characteristic_metrics(MosaicModel(uses_z0=False), MosaicReader(), images, labels, f, n=120, resamples=16)
    assert out["characteristic_coverage"]["Eyeglasses"] == pytest.approx(0.0, abs=1e-6)

    class Leaky(MosaicModel):   # resampling the glasses also moves the background hue
        def decode(self, z):
            z = z.clone()
            z[:, 3] = z[:, 3] + 0.2 * z[:, 0]
            return super().decode(z)

    out = characteristic_metrics(Leaky(), MosaicReader(), images, labels, f, n=120, resamples=16)
    assert out["style_kept"]["Eyeglasses"] < 0.95 and out["style_kept"]["Wearing_Hat"] == pytest.approx(1.0, abs=1e-6)
    assert "bg_hue" in out["characteristic_factors"]["Eyeglasses"]["moved"]


def test_an_unreadable_factor_is_left_out_and_listed():
    images, labels, f = _fake_test_set()
    f = dict(f, scale=np.random.default_rng(5).random(len(images)))   # the images no longer show this "scale"
    out = characteristic_metrics(MosaicModel(), MosaicReader(), images, labels, f, n=60, resamples=4)
    assert out["factors_unreadable"] == ["scale"]
    # an own factor is checked on the faces with the label: unreadable there, it leaves the coverage
    with_glasses = labels[:, 0] == 1
    shape = f["glasses_shape"].copy()
    shape[with_glasses] = np.random.default_rng(6).random(with_glasses.sum())
    out = characteristic_metrics(MosaicModel(), MosaicReader(), images, labels, dict(f, glasses_shape=shape), n=60, resamples=4)
    assert out["characteristic_factors"]["Eyeglasses"]["own_unreadable"] == ["glasses_shape"]
    assert list(out["characteristic_factors"]["Eyeglasses"]["own"]) == ["glasses_hue"]
    assert out["characteristic_coverage"]["Eyeglasses"] == out["characteristic_factors"]["Eyeglasses"]["own"]["glasses_hue"]
    with pytest.raises(ValueError, match="resamples must be at least 2 to have a spread, got 1"):
        characteristic_metrics(MosaicModel(), MosaicReader(), images, labels, f, resamples=1)


# ---- the reader: save, load strictly, train, read ------------------------------------------------

def _tiny_reader():
    torch.manual_seed(0)
    return FactorReader(factors=FAKE_FACTORS, image_size=32, channels=(4, 8), hidden_dim=8)


def test_save_load_round_trip_and_output_units(tmp_path):
    reader = _tiny_reader()
    reader.set_target_stats(torch.full((5,), 0.5), torch.full((5,), 2.0))
    reader.save(tmp_path / "r")
    again = load_factor_reader(tmp_path / "r")
    x = torch.rand(6, 3, 32, 32)
    values = again.read(x)
    assert torch.equal(reader.read(x), values) and again.factor_names == [s["name"] for s in FAKE_FACTORS]
    assert values.shape == (6, 5)
    assert ((values[:, [1, 4]] >= 0) & (values[:, [1, 4]] < 1)).all()          # hues in [0, 1)
    assert set(values[:, 2].tolist()) <= {0.0, 1.0, 2.0}                          # kinds as indices
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*\(2, 3, 64, 64\)"):
        again(torch.rand(2, 3, 64, 64))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]), "damaged"),
    (lambda d: (d / "model.safetensors").unlink(), "missing model.safetensors"),
    (lambda d: (d / "config.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "config.json").write_text(json.dumps({"factors": []})), "does not describe a factor reader"),
    (lambda d: _edit_config(d, hidden_dim=9), "does not match its config.json"),
    (lambda d: _edit_config(d, factors=[{"name": "x", "kind": "spiral"}]), "invalid factor reader.*'spiral'"),
])
def test_damaged_reader_gives_a_clear_error(tmp_path, damage, message):
    d = tmp_path / "r"
    _tiny_reader().save(d)
    damage(d)
    with pytest.raises(CheckpointError, match=message):
        load_factor_reader(d)


def _edit_config(d, **changes):
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, **changes}))


def test_training_faces_switch_characteristics_on_where_the_generator_allows_them():
    plain_images, plain_labels, plain_factors = render_range(0, "train", 0, 200)
    images, labels, factors = training_faces(0, 200, boost=0.0)
    assert np.array_equal(images, plain_images) and np.array_equal(labels, plain_labels)
    images, labels, factors = training_faces(0, 200, boost=0.5)
    assert np.array_equal(factors, plain_factors)                      # the same faces, only more accessories
    y = dict(zip(LABEL_NAMES, labels.T))
    assert y["Eyeglasses"].mean() > 0.4 > plain_labels[:, LABEL_NAMES.index("Eyeglasses")].mean()
    assert not (y["Bald"] & (y["Wearing_Hat"] | y["Bangs"])).any()   # never a hat or bangs on a bald head
    assert (labels >= plain_labels * np.isin(LABEL_NAMES, list(BOOSTED))).all()   # nothing switched off
    with pytest.raises(ValueError, match="boost must be a probability in \\[0, 1\\], got 1.5"):
        training_faces(0, 2, boost=1.5)


def test_the_cli_trains_saves_and_writes_a_card(tmp_path):
    out = main(parse_args(["--n-train", "64", "--n-test", "64", "--epochs", "1", "--batch-size", "32", "--threads", "1",
                           "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "r")]))
    reader = load_factor_reader(tmp_path / "r")
    assert reader.factor_names == FACTOR_NAMES and reader.specs == factor_specs()
    card = (tmp_path / "r" / "README.md").read_text()
    assert "python -m train.factor_reader --n-train 64 --n-test 64 --epochs 1" in card
    assert all(f"| {k} |" in card for k in FACTOR_NAMES) and set(out["quality"]) == set(FACTOR_NAMES)


def test_bundled_reader_reads_fresh_faces():
    if not BUNDLED.is_dir():
        pytest.skip("no bundled factor reader")
    reader = load_factor_reader(BUNDLED)
    images, labels, factors = render_range(0, "test", 6000, 6400)   # never used to train or to measure it
    read = reader.read(to_tensor(images)).numpy()
    shown = shown_mask(labels, LABEL_NAMES, FACTOR_NAMES)
    q = {s["name"]: quality(s, read[shown[:, j], j], factors[shown[:, j], j]) for j, s in enumerate(reader.specs)}
    for name in ("pos_x", "pos_y", "bg_hue", "bg_value", "skin_tone", "hair_class", "smile"):
        assert q[name] > 0.8, (name, round(q[name], 3))
