"""A decoder trained from the true factors, judged by the oracle (train.informed)."""
import numpy as np
import pytest
import torch
from torch import nn

from train.data.synthetic import FACTOR_NAMES
from train import batches
from train.informed import factor_inputs, informed_decoder, judge_informed, main, parse_args, train_informed


def _factors(n: int, rng) -> dict:
    f = {k: rng.random(n).astype(np.float32) for k in FACTOR_NAMES}
    for k, kinds in (("hat_style", 3), ("hair_class", 5), ("earring_style", 3)):
        f[k] = rng.integers(0, kinds, n).astype(np.float32)
    return f


def test_inputs_are_the_labels_and_every_factor_standardised_on_the_training_faces():
    rng = np.random.default_rng(0)
    n, fit = 400, 300
    labels = rng.integers(0, 2, (n, 4))
    f = _factors(n, rng)
    f["earring_style"][fit:] = 2  # the test faces have one kind only: still the same three columns
    u = factor_inputs(labels, f, fit=fit)
    # 4 labels, 3 + 5 + 3 one-hot kinds, 4 hues as (cos, sin), the other factors one column each
    assert u.shape == (n, 4 + 11 + 4 * 2 + len(FACTOR_NAMES) - 7) and u.dtype == np.float32
    assert np.allclose(u[:fit].mean(0), 0, atol=1e-5) and np.allclose(u[:fit].std(0), 1, atol=1e-4)
    assert not np.allclose(u[fit:].mean(0), 0, atol=1e-2)  # the test faces are not standardised on themselves
    # a label column is the label, shifted and scaled
    assert np.array_equal(u[:, 0] > 0, labels[:, 0] == 1)


def test_the_decoder_has_the_checkpoint_architecture_without_gates():
    from conftest import tiny_model

    config = tiny_model(image_size=32, label_gates=True).config
    d = informed_decoder(config, 20)
    assert d.gates == 0 and not d.film_widths and d.project[0].in_features == 20
    assert d(torch.zeros(2, 20)).shape == (2, 3, 32, 32)
    assert informed_decoder(config, 20, film=True).film_widths == [8, 8, 8]
    wide = informed_decoder(config, 20, channels=[16, 8, 8])
    assert wide.body[-1].in_channels == 16 and wide(torch.zeros(2, 20)).shape == (2, 3, 32, 32)


def test_training_lowers_the_error_and_stops_where_told():
    rng = np.random.default_rng(1)
    u = torch.from_numpy(rng.normal(size=(256, 3)).astype(np.float32))
    # each face a flat colour given by its inputs: a decoder can learn it
    colour = torch.sigmoid(u) * 255
    images = colour[:, None, None, :].expand(256, 16, 16, 3).to(torch.uint8).contiguous()
    d = informed_decoder({"image_size": 16, "in_channels": 3, "channels": [8, 8], "hidden_dim": 16,
                          "refine_channels": 0, "decoder_film": False}, 3)
    first = train_informed(d, images, u, batch_size=32, steps=1, lr=3e-3)
    run = train_informed(d, images, u, batch_size=32, steps=300, lr=3e-3)
    assert run["steps"] == 300 and run["epochs"] == pytest.approx(300 * 32 / 256)
    assert run["loss"] < 0.2 * first["loss"]
    assert not d.training
    with pytest.raises(ValueError, match="needs steps or minutes"):
        train_informed(d, images, u)
    with pytest.raises(ValueError, match="batch_size must be between 1 and the 256 training faces, got 512"):
        train_informed(d, images, u, batch_size=512, steps=1)
    with pytest.raises(ValueError, match="256 images but 10 input rows"):
        train_informed(d, images, u[:10], steps=1)


def test_residual_emphasis_learns_a_one_pixel_detail_sooner():
    rng = np.random.default_rng(2)
    u = torch.from_numpy(rng.normal(size=(256, 2)).astype(np.float32))
    # a face: a flat colour from the first input, and one pixel whose brightness is the second input's
    images = (torch.sigmoid(u[:, :1]) * 255)[:, None, None, :].expand(256, 16, 16, 3).clone()
    images[:, 11, 4, :] = (u[:, 1:] > 0).float() * 255
    images = images.to(torch.uint8)

    def dot_error(emphasis: float) -> float:
        torch.manual_seed(0)
        d = informed_decoder({"image_size": 16, "in_channels": 3, "channels": [8, 8], "hidden_dim": 16,
                              "refine_channels": 0, "decoder_film": False}, 2)
        train_informed(d, images, u, batch_size=32, steps=150, lr=3e-3, emphasis=emphasis)
        with torch.no_grad():
            drawn = torch.sigmoid(d(u))[:, :, 11, 4]
        return (drawn - images[:, 11, 4, :].float() / 255).square().mean().item()

    plain, emphasised = dot_error(0.0), dot_error(1.0)
    assert emphasised < 0.5 * plain, (plain, emphasised)


class _Bright(nn.Module):
    """Draws a white face where the first input is positive, a black one elsewhere."""

    def forward(self, u):
        return torch.where(u[:, :1, None, None] > 0, 20.0, -20.0).expand(len(u), 3, 8, 8)


class _Stub:
    """An oracle that sees Wearing_Earrings where an image is bright and Smiling where it is dark."""
    label_names = ["Smiling", "Wearing_Earrings", "Wearing_Hat"]

    def predict(self, x):
        bright = x.mean((1, 2, 3)) > 0.5
        return torch.stack([~bright, bright, torch.zeros_like(bright)], 1)


def test_judge_reads_the_faces_and_what_was_drawn_of_them():
    images = np.zeros((6, 8, 8, 3), np.uint8)
    images[:3] = 255                                                   # the oracle sees earrings on faces 0-2
    u = torch.tensor([[1.0], [1.0], [-1.0], [1.0], [-1.0], [-1.0]])    # drawn bright: faces 0, 1, 3
    labels = np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 1], [0, 1]])  # earrings on 0-2, smiling on 4, 5
    j = judge_informed(_Bright(), _Stub(), images, u, labels, ["Wearing_Earrings", "Smiling"], batch=4)
    assert list(j["labels"]) == ["Smiling", "Wearing_Earrings"]  # the oracle's labels the data has, in its order
    ear = j["labels"]["Wearing_Earrings"]
    assert ear["faces"] == 3 and ear["seen_faces"] == 1.0 and ear["seen_drawn"] == pytest.approx(2 / 3)
    assert ear["accuracy_faces"] == 1.0 and ear["accuracy_drawn"] == pytest.approx(4 / 6)
    smile = j["labels"]["Smiling"]
    assert smile["faces"] == 2 and smile["seen_drawn"] == 1.0 and smile["accuracy_faces"] == pytest.approx(5 / 6)
    # faces 2 and 3 drawn wrong (all 192 values off by 1), the others exactly: MSE 2/6
    assert j["psnr"] == pytest.approx(10 * np.log10(3), abs=1e-3)


def test_cli_trains_judges_and_names_bad_input(tmp_path, monkeypatch, capsys):
    from conftest import tiny_model

    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path / "cache"))
    tiny_model(labels=("Eyeglasses", "Wearing_Earrings"), image_size=64).save_pretrained(tmp_path / "m")
    tiny_model(image_size=32).save_pretrained(tmp_path / "m32")
    assert main(parse_args([str(tmp_path / "m"), "--steps", "3", "--batch-size", "16", "--n-train", "64",
                            "--n-test", "40", "--decoder-film", "--device", "cpu"])) == 0
    out = capsys.readouterr().out
    assert "on cpu" in out and "(with FiLM, channels " in out and "3 steps (0.75 epochs)" in out and "40 test faces drawn from their factors" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[3:]}
    assert "Wearing_Earrings" in rows and "Eyeglasses" in rows and len(rows) == 15  # every label the oracle reads
    assert all(0 <= float(r[k]) <= 1 for r in rows.values() for k in (4, 5))  # accuracies
    for argv, message in ((["--n-test", "5"], "say how long to train"),
                          (["--steps", "0"], "--steps must be at least 1, got 0"),
                          (["--minutes", "-1"], "--minutes must be positive, got -1.0"),
                          (["--steps", "1", "--n-train", "8"], "--n-train must be at least one batch (64), got 8"),
                          (["--steps", "1", "--residual-emphasis", "-1"], "--residual-emphasis must be a finite power >= 0, got -1.0"),
                          (["--steps", "1", "--residual-emphasis-floor", "-0.1"],
                           "--residual-emphasis-floor must be a finite number > 0, got -0.1")):
        with pytest.raises(SystemExit):
            parse_args([str(tmp_path / "m"), *argv])
        assert message in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m"), "--steps", "1", "--n-train", "64", "--n-test", "40",
                            "--channels", "8", "8"])) == 2
    assert "error: 64x64 images need 4 conv channels, got [8, 8]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--steps", "1", "--channels", "8", "-1", "8", "8"])
    assert "--channels must be positive widths, got [8, -1, 8, 8]" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "missing"), "--steps", "1"])) == 2
    assert "error:" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m32"), "--steps", "1"])) == 2
    assert "reads 64x64 images, the checkpoint draws 32x32" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m"), "--steps", "1", "--device", "tpu"])) == 2
    assert "error: unknown device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(parse_args([str(tmp_path / "m"), "--steps", "1", "--device", "cuda"])) == 2
        assert "error: device 'cuda' was asked for, but CUDA is not available" in capsys.readouterr().err


def test_weighted_epoch_order_oversamples_in_proportion_and_repeats():
    w = np.ones(4000)
    w[:1000] = 3.0                                        # a quarter of the faces, weight 3: half the draws
    order = batches.weighted_epoch_order(w, seed=1, epoch=0)
    assert order.shape == (4000,) and 0 <= order.min() and order.max() < 4000
    assert (order < 1000).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert torch.equal(order, batches.weighted_epoch_order(w, seed=1, epoch=0))       # a function of (seed, epoch)
    assert not torch.equal(order, batches.weighted_epoch_order(w, seed=1, epoch=1))
    zero = np.ones(10)
    zero[3] = 0
    assert 3 not in batches.weighted_epoch_order(zero, seed=0, epoch=0).tolist()
    for bad in (np.zeros(5), np.array([1.0, -1.0]), np.array([1.0, np.nan]), np.ones((2, 2)), np.ones(0)):
        with pytest.raises(ValueError, match="weights must be a non-empty 1-D array"):
            batches.weighted_epoch_order(bad, seed=0, epoch=0)


def test_oversample_is_parsed_checked_and_used(tmp_path, monkeypatch, capsys):
    from conftest import tiny_model

    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path / "cache"))
    tiny_model(labels=("Eyeglasses", "Wearing_Earrings"), image_size=64).save_pretrained(tmp_path / "m")
    base = [str(tmp_path / "m"), "--steps", "2", "--batch-size", "16", "--n-train", "64", "--n-test", "20"]
    assert parse_args([*base, "--oversample", "Wearing_Earrings=2.5"]).oversample == ("Wearing_Earrings", 2.5)
    for bad in ("Wearing_Earrings", "Wearing_Earrings=0", "Wearing_Earrings=x", "=3", "Male=inf"):
        with pytest.raises(SystemExit):
            parse_args([*base, "--oversample", bad])
        assert f"expected LABEL=W with W a positive number, got {bad!r}" in capsys.readouterr().err
    assert main(parse_args([*base, "--oversample", "Earrings=3"])) == 2
    assert "error: --oversample: unknown label 'Earrings'" in capsys.readouterr().err
    assert main(parse_args([*base, "--oversample", "Wearing_Earrings=3"])) == 0
    assert "faces with Wearing_Earrings drawn 3x as often" in capsys.readouterr().out
    images = torch.zeros(8, 8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="8 images but 3 weights"):
        train_informed(informed_decoder({"image_size": 8, "in_channels": 3, "channels": [4], "hidden_dim": 4,
                                         "refine_channels": 0, "decoder_film": False}, 2),
                       images, torch.zeros(8, 2), batch_size=2, steps=1, weights=np.ones(3))
