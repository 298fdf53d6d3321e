"""Kinds in z_s (CCVAE.fit_kinds): the directions of the style latents along which faces with a
label vary more than faces without it are found, fitted per side, saved with the weights, and
redrawn with z_i by a resample and moved with it by a swap; nothing else in z_s moves."""
import json

import pytest
import torch

from ccvae import CCVAE, CheckpointError, editing
from conftest import tiny_model

S = 6  # style latents of the test model: latent_dim 9 with 3 labels of d = 1


def planted(n: int = 6000, seed: int = 0):
    """z_s (n, S) and labels y (n, 3): faces with label 0 vary 3x more (std) along a unit
    direction e of z_s, shifted by 1.5 along it; faces *without* label 2 vary 3x more along a
    direction f orthogonal to e (No_Beard: the beards are on the y = 0 side); label 1 changes
    nothing in z_s."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 3, generator=g) < torch.tensor([0.3, 0.5, 0.2])).float()
    e = torch.randn(S, generator=g)
    e = e / e.norm()
    z_s = torch.randn(n, S, generator=g, dtype=torch.float64)
    along = z_s @ e.double()
    z_s = z_s + ((3.0 * along + 1.5 - along) * y[:, 0].double())[:, None] * e.double()
    f = torch.randn(S, generator=g)
    f = f - (f @ e) * e
    f = (f / f.norm()).double()
    along = z_s @ f
    z_s = z_s + (2.0 * along * (1 - y[:, 2].double()))[:, None] * f
    return z_s, y, e


def fitted_model():
    model = tiny_model(latent_dim=3 + S)
    z_s, y, e = planted()
    ratios = model.fit_kinds(z_s, y)
    return model, ratios, e


def test_fit_finds_the_planted_directions_on_the_side_that_varies():
    model, ratios, e = fitted_model()
    assert model.kind_directions == 3 and model.config["kind_directions"] == 3
    assert ratios[0][0] == [] and len(ratios[0][1]) == 1 and 7.0 < ratios[0][1][0] < 11.5  # variance ratio 9
    assert ratios[1] == [[], []]  # nothing varies with label 1
    assert len(ratios[2][0]) == 1 and 7.0 < ratios[2][0][0] < 11.5 and ratios[2][1] == []  # faces without label 2
    basis = model.kind_basis
    assert basis.shape == (2, 3, 3, S)
    assert abs(float(basis[1, 0, 0] @ e)) > 0.99 and abs(float(basis[0, 2, 0] @ e)) < 0.05
    zero = torch.zeros(S)
    used = {(1, 0, 0), (0, 2, 0)}
    assert all(torch.equal(basis[v, i, k], zero) for v in (0, 1) for i in range(3) for k in range(3) if (v, i, k) not in used)
    sign = float(torch.sign(basis[1, 0, 0] @ e))
    assert abs(float(model.kind_loc[1, 0, 0]) * sign - 1.5) < 0.12 and abs(float(model.kind_tril[1, 0, 0, 0]) - 3.0) < 0.12
    assert abs(float(model.kind_loc[0, 2, 0])) < 0.12 and abs(float(model.kind_tril[0, 2, 0, 0]) - 3.0) < 0.12
    assert float(model.kind_tril.abs().sum()) == pytest.approx(float(model.kind_tril[1, 0, 0, 0] + model.kind_tril[0, 2, 0, 0]))


def test_a_resample_redraws_its_sides_kind_coordinates_and_keeps_the_rest_of_z_s():
    model, _, e = fitted_model()
    u = model.kind_basis[1, 0, 0]
    across = lambda t, u: t[:, 3:] - (t[:, 3:] @ u)[:, None] * u
    z = torch.randn(4000, model.latent_dim, generator=torch.Generator().manual_seed(1))
    out = editing.resample_latent(model, z, "Eyeglasses", present=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(across(out, u), across(z, u), atol=1e-5, rtol=0)  # only the kind direction moved
    c = editing.kind_coordinates(model, out, 0, True)[:, 0] * torch.sign(u @ e)
    assert abs(float(c.mean()) - 1.5) < 0.15 and abs(float(c.std()) - 3.0) < 0.15, (c.mean(), c.std())
    assert torch.equal(out[:, 1:3], z[:, 1:3])  # the other labels' latents
    # the absent side of label 0 has no kinds: z_s untouched; nor has label 1 on either side
    for label, present in ((0, False), (1, True), (1, False), (2, True)):
        out = editing.resample_latent(model, z[:5], label, present=present, generator=torch.Generator().manual_seed(3))
        assert torch.equal(out[:, 3:], z[:5, 3:]) and not torch.equal(out[:, label], z[:5, label]), (label, present)
    # label 2's kinds are on its absent side
    f = model.kind_basis[0, 2, 0]
    out = editing.resample_latent(model, z, 2, present=False, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(across(out, f), across(z, f), atol=1e-5, rtol=0)
    assert abs(float((out[:, 3:] @ f).std()) - 3.0) < 0.15


def test_without_a_fit_a_resample_is_the_papers_draw_for_draw():
    model = tiny_model(latent_dim=3 + S)
    assert model.kind_directions == 0 and not any("kind" in k for k in model.state_dict())
    z = torch.randn(5, model.latent_dim)
    out = editing.resample_latent(model, z, 0, present=True, generator=torch.Generator().manual_seed(4))
    draws = editing.sample_characteristic(model, 0, True, 5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out[:, 0], draws[:, 0]) and torch.equal(out[:, 1:], z[:, 1:])
    assert torch.equal(editing.set_kinds(model, z, 0, True, torch.zeros(5, 0)), z)


def test_a_swap_takes_the_donors_kind_coordinates_on_the_donors_side():
    model, _, _ = fitted_model()
    u = model.kind_basis[1, 0, 0]  # the kinds of faces with label 0 (w = 1, b = 0: present where z_0 > 0)
    g = torch.Generator().manual_seed(5)
    z, donor = torch.randn(3, model.latent_dim, generator=g), torch.randn(1, model.latent_dim, generator=g)
    donor[:, 0] = 1.0
    out = editing.swap(model, z, donor, "Eyeglasses")
    assert torch.equal(out[:, 0], donor[:, 0].expand(3))
    torch.testing.assert_close(out[:, 3:] @ u, (donor[:, 3:] @ u).expand(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[:, 3:] - (out[:, 3:] @ u)[:, None] * u, z[:, 3:] - (z[:, 3:] @ u)[:, None] * u,
                               atol=1e-6, rtol=0)
    donor[:, 0] = -1.0  # a donor without the label has no kinds of label 0 to give
    out = editing.swap(model, z, donor, "Eyeglasses")
    assert torch.equal(out[:, 3:], z[:, 3:]) and torch.equal(out[:, 0], donor[:, 0].expand(3))


def test_the_fit_travels_with_the_weights_and_is_checked_on_loading(tmp_path):
    model, _, _ = fitted_model()
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["kind_directions"] == 3
    loaded = CCVAE.from_pretrained(tmp_path / "m")
    for name in ("kind_basis", "kind_loc", "kind_tril"):
        assert torch.equal(getattr(loaded, name), getattr(model, name))
    z = torch.randn(2, model.latent_dim)
    g = lambda: torch.Generator().manual_seed(6)
    assert torch.equal(editing.resample_latent(loaded, z, 0, present=True, generator=g()),
                       editing.resample_latent(model, z, 0, present=True, generator=g()))
    # a config that names kinds whose tensors the weights lack
    plain = tiny_model(latent_dim=3 + S)
    plain.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    config["kind_directions"] = 3
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="kind_basis"):
        CCVAE.from_pretrained(tmp_path / "p")


@pytest.mark.parametrize("call, message", [
    (lambda m, z, y: m.fit_kinds(z[:, :4], y), r"z_s must have shape \(N, 6\), got \(6000, 4\)"),
    (lambda m, z, y: m.fit_kinds(z, y[:, :2]), r"y must have shape \(6000, 3\), got \(6000, 2\)"),
    (lambda m, z, y: m.fit_kinds(z, y, directions=0), "directions must be a whole number >= 1, got 0"),
    (lambda m, z, y: m.fit_kinds(z, y, min_ratio=1.0), "min_ratio must exceed 1"),
    (lambda m, z, y: m.fit_kinds(z * float("nan"), y), "z_s holds NaN or inf"),
])
def test_bad_fits_are_named_and_change_nothing(call, message):
    model = tiny_model(latent_dim=3 + S)
    z_s, y, _ = planted()
    with pytest.raises(ValueError, match=message):
        call(model, z_s, y)
    assert model.kind_directions == 0 and not any("kind" in k for k in model.state_dict())


def test_kind_directions_must_be_a_whole_number_and_need_style_latents():
    with pytest.raises(ValueError, match="kind_directions must be a whole number >= 0, got -1"):
        tiny_model(kind_directions=-1)
    with pytest.raises(ValueError, match="kind_directions needs style latents"):
        tiny_model(latent_dim=3, kind_directions=2)
    with pytest.raises(ValueError, match="no style latents"):
        tiny_model(latent_dim=3).fit_kinds(torch.zeros(10, 0), torch.zeros(10, 3))
