"""The sampling prior of the style latents: N(0, I), or a Gaussian fitted to q(z_s) (CCVAE.fit_style_prior)."""
import json

import pytest
import torch

from ccvae import CCVAE, CheckpointError, editing

from conftest import tiny_model


def _correlated(n: int, S: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n draws of a correlated Gaussian in S dimensions, with its true mean and covariance."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.linspace(-1.0, 2.0, S)
    A = torch.randn(S, S, generator=g) * 0.5 + torch.eye(S) * 0.3
    return mean + torch.randn(n, S, generator=g) @ A.T, mean, A @ A.T


def test_fit_recovers_the_mean_and_covariance_and_generation_draws_from_it():
    model = tiny_model()
    S = model.style_dim
    z_s, mean, cov = _correlated(40_000, S)
    model.fit_style_prior(z_s)
    assert model.config["fitted_style_prior"]
    assert torch.allclose(model.style_prior_loc, mean, atol=0.03)
    fitted = model.style_prior_tril @ model.style_prior_tril.T
    assert torch.allclose(fitted, cov, atol=0.05)
    drawn = model.sample_style(40_000, generator=torch.Generator().manual_seed(1))
    assert drawn.shape == (40_000, S)
    assert torch.allclose(drawn.mean(0), mean, atol=0.05) and torch.allclose(torch.cov(drawn.T), cov, atol=0.08)
    # generate and resample_style draw z_s from it; z_c as before
    y = torch.ones(4000, model.num_labels)
    z = editing.generate(model, y, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(z[:, model.num_labels:].mean(0), mean, atol=0.08)
    z0 = torch.zeros(3000, model.latent_dim)
    z0[:, :model.num_labels] = 7.0
    z1 = editing.resample_style(model, z0, generator=torch.Generator().manual_seed(3))
    assert (z1[:, :model.num_labels] == 7.0).all()
    assert torch.allclose(z1[:, model.num_labels:].mean(0), mean, atol=0.08)


def test_without_a_fit_generation_is_the_standard_normal_draw_for_draw():
    model = tiny_model()
    assert not model.config["fitted_style_prior"] and not hasattr(model, "style_prior_loc")
    a = model.sample_style(5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, torch.randn(5, model.style_dim, generator=torch.Generator().manual_seed(4)))
    y = torch.tensor([[1.0, 0.0, 1.0]] * 5)
    g = torch.Generator().manual_seed(5)
    expected_c = model.conditional_prior(y).sample(generator=g)
    expected = torch.cat([expected_c, torch.randn(5, model.style_dim, generator=g)], 1)
    assert torch.equal(editing.generate(model, y, generator=torch.Generator().manual_seed(5)), expected)


def test_the_fit_travels_with_the_weights_and_older_configs_load_unfitted(tmp_path):
    model = tiny_model()
    model.fit_style_prior(_correlated(2000, model.style_dim)[0])
    model.save_pretrained(tmp_path / "fitted")
    config = json.loads((tmp_path / "fitted" / "config.json").read_text())
    assert config["fitted_style_prior"] is True
    loaded = CCVAE.from_pretrained(tmp_path / "fitted")
    assert torch.equal(loaded.style_prior_loc, model.style_prior_loc)
    assert torch.equal(loaded.style_prior_tril, model.style_prior_tril)
    g = lambda: torch.Generator().manual_seed(6)  # noqa: E731
    assert torch.equal(loaded.sample_style(8, generator=g()), model.sample_style(8, generator=g()))
    # a config from before the option loads with N(0, I)
    tiny_model().save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["fitted_style_prior"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert not CCVAE.from_pretrained(tmp_path / "old").config["fitted_style_prior"]
    # a config that claims a fit its weights lack is refused, naming the tensors
    config["fitted_style_prior"] = True
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="style_prior_loc"):
        CCVAE.from_pretrained(tmp_path / "old")


def test_bad_fits_are_named_and_change_nothing():
    model = tiny_model()
    S = model.style_dim
    with pytest.raises(ValueError, match=rf"more than {S} samples"):
        model.fit_style_prior(torch.randn(S, S))
    with pytest.raises(ValueError, match=rf"\(N, {S}\)"):
        model.fit_style_prior(torch.randn(100, S + 1))
    bad = torch.randn(100, S)
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model.fit_style_prior(bad)
    with pytest.raises(ValueError, match="not positive definite"):
        model.fit_style_prior(torch.ones(100, S) * 1e3, jitter=-1.0)
    assert not model.config["fitted_style_prior"]
    no_style = tiny_model(latent_dim=3)
    with pytest.raises(ValueError, match="no style latents"):
        no_style.fit_style_prior(torch.randn(100, 0))
    with pytest.raises(ValueError, match="needs style latents"):
        tiny_model(latent_dim=3, fitted_style_prior=True)
