"""Characteristic latents of d dimensions (CCVAE characteristic_dim): d = 1 is the paper, and at
d = 3 the objective, the editing operations, the intervention aid, checkpoints and the app's
sliders and Resample buttons all treat label i's block z_i = z[..., i d:(i + 1) d] as one whole,
read along u_i = w_i / |w_i|. References are written by hand with torch.distributions."""
import itertools
import json

import pytest
import torch
import torch.distributions as D
from PIL import Image

import app
from ccvae import CCVAE, CheckpointError, editing, objective
from conftest import prior_on_its_side, tiny_model
from test_objective import _likelihood
from train import aids

L, d, S = 3, 3, 4  # labels, characteristic_dim, style latents


def d3_model(*, seed: int = 1, **kwargs) -> CCVAE:
    """A tiny model with L = 3 blocks of d = 3 and S = 4 style latents, whose prior means, scales,
    classifier directions and biases are random (nothing lies on the starting diagonal)."""
    model = tiny_model(latent_dim=L * d + S, characteristic_dim=d, **kwargs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.prior_loc.copy_(1.5 * torch.randn(2, L * d, generator=g))
        model.prior_raw_scale.copy_(0.7 * torch.randn(2, L * d, generator=g))
        model.classifier_weight.copy_(torch.randn(L * d, generator=g))
        model.classifier_bias.copy_(0.5 * torch.randn(L, generator=g))
    return model


def blocks(t: torch.Tensor) -> torch.Tensor:
    """(..., L d) -> (..., L, d)."""
    return t.unflatten(-1, (L, d))


def unit(model, i: int) -> torch.Tensor:
    """u_i = w_i / |w_i|, from the flat classifier weight by hand."""
    w = model.classifier_weight.detach()[i * d:(i + 1) * d]
    return w / w.norm()


def outside(z: torch.Tensor, i: int) -> torch.Tensor:
    """Every entry of z (..., D) except label i's block."""
    return torch.cat([z[..., :i * d], z[..., (i + 1) * d:]], -1)


# ---- d = 1 is the paper --------------------------------------------------------------------------


def test_d1_has_the_papers_parameters_and_values():
    plain, one = tiny_model(), tiny_model(characteristic_dim=1)
    assert one.config["characteristic_dim"] == 1 and one.characteristic_size == 3
    assert one.classifier_weight.shape == (3,)
    assert one.prior_loc.shape == one.prior_raw_scale.shape == (2, 3)
    # the paper's starting point: w_i = 1, prior means at -/+ sep/2, scales 1
    assert torch.equal(one.classifier_weight.detach(), torch.ones(3))
    assert torch.equal(one.prior_loc.detach(), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    torch.testing.assert_close(one.prior_params()[1], torch.full((2, 3), 1.0 + 1e-4))
    ps, os_ = plain.state_dict(), one.state_dict()
    assert {k: v.shape for k, v in ps.items()} == {k: v.shape for k, v in os_.items()}
    assert all(torch.equal(ps[k], os_[k]) for k in ps)
    gated = tiny_model(label_gates=True, characteristic_dim=1)
    assert not any("gate_direction" in k for k in gated.state_dict())
    assert not hasattr(gated.decoder, "gate_direction")
    assert tiny_model(label_gates=True, latent_dim=L * d + S, characteristic_dim=d).decoder.gate_direction.shape == (L * d,)

    plain, one = plain.double(), one.double()
    torch.manual_seed(2)
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (4, 3)).double()
    z = plain.encode(x).sample(5)
    assert torch.equal(objective.supervised(plain, x, y, z=z).bound, objective.supervised(one, x, y, z=z).bound)
    assert torch.equal(objective.unsupervised(plain, x, z=z[0]).bound, objective.unsupervised(one, x, z=z[0]).bound)
    drawn = [objective.supervised(m, x, y, k=7, generator=torch.Generator().manual_seed(3)).bound for m in (plain, one)]
    assert torch.equal(*drawn)

    with torch.no_grad():
        one.classifier_weight.copy_(torch.tensor([0.5, -2.0, 3.0]))
        one.classifier_bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
    z_c = torch.randn(6, 3, dtype=torch.float64)
    expected = torch.stack([z_c[:, i] * [0.5, -2.0, 3.0][i] + [0.1, 0.2, -0.3][i] for i in range(3)], 1)
    torch.testing.assert_close(one.classifier_logits(z_c), expected)


# ---- the objective at d = 3 ----------------------------------------------------------------------


def _log_q_y_given_zc(model, z_c, y):
    """log q(y | z_c) = sum_i log Bernoulli(y_i; sigmoid(w_i . z_i + b_i)), by blocks."""
    logits = (blocks(z_c) * blocks(model.classifier_weight)).sum(-1) + model.classifier_bias
    return D.Independent(D.Bernoulli(logits=logits), 1).log_prob(y.expand_as(logits))


def _log_p_zc_given_y(model, z_c, y):
    """log p(z_c | y): block i ~ N(mu_{i, y_i}, diag sigma_{i, y_i}^2) in d dims, blocks independent."""
    loc, scale = (blocks(t) for t in model.prior_params())  # (2, L, d)
    yl, i = y.long(), torch.arange(L)
    return D.Independent(D.Normal(loc[yl, i], scale[yl, i]), 2).log_prob(blocks(z_c))


def _d3_batch(B=5, K=6):
    model = d3_model().double()
    model.set_label_prior([0.2, 0.6, 0.85])
    torch.manual_seed(4)
    x = torch.rand(B, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (B, L)).double()
    q = model.encode(x)
    return model, x, y, q, q.sample(K)


def test_supervised_at_d3_equals_eq1_written_with_distributions():
    model, x, y, q, z = _d3_batch()
    C = L * d
    got = objective.supervised(model, x, y, z=z, posterior=q).bound

    log_q_y_zc = _log_q_y_given_zc(model, z[..., :C], y)  # (K, B)
    log_q_y_x = log_q_y_zc.exp().mean(0).log()
    w = (log_q_y_zc[0] - log_q_y_x).exp()
    z0 = z[0]
    log_p_z_y = _log_p_zc_given_y(model, z0[:, :C], y) + D.Independent(D.Normal(0.0, torch.ones(S, dtype=z.dtype)), 1).log_prob(z0[:, C:])
    log_q_z_x = D.Independent(D.Normal(q.loc, q.scale), 1).log_prob(z0)
    log_ratio = _likelihood(model, x, model.decode_logits(z0)) + log_p_z_y - log_q_y_zc[0] - log_q_z_x
    log_py = D.Independent(D.Bernoulli(probs=model.label_prior), 1).log_prob(y)
    torch.testing.assert_close(got, w * log_ratio + log_q_y_x + log_py, rtol=1e-9, atol=1e-7)
    # the blocks matter: the same z read with the labels' blocks permuted gives another value
    perm = torch.cat([z[..., 3:6], z[..., 0:3], z[..., 6:]], -1)
    assert not torch.allclose(objective.supervised(model, x, y, z=perm, posterior=q).bound, got)


def test_unsupervised_at_d3_equals_brute_force_over_all_label_vectors():
    model, x, _, q, z = _d3_batch()
    z, C, B = z[0], L * d, z.shape[1]
    got = objective.unsupervised(model, x, z=z, posterior=q).bound

    log_px = _likelihood(model, x, model.decode_logits(z))
    log_pzs = D.Independent(D.Normal(0.0, torch.ones(S, dtype=z.dtype)), 1).log_prob(z[:, C:])
    log_qz = D.Independent(D.Normal(q.loc, q.scale), 1).log_prob(z)
    p_y = D.Independent(D.Bernoulli(probs=model.label_prior), 1)
    expected = log_px + log_pzs - log_qz
    total_q = torch.zeros(B, dtype=z.dtype)
    for bits in itertools.product([0.0, 1.0], repeat=L):
        y = torch.tensor(bits, dtype=z.dtype).expand(B, L)
        log_q = _log_q_y_given_zc(model, z[:, :C], y)
        total_q = total_q + log_q.exp()
        expected = expected + log_q.exp() * (_log_p_zc_given_y(model, z[:, :C], y) + p_y.log_prob(y) - log_q)
    torch.testing.assert_close(total_q, torch.ones(B, dtype=z.dtype))  # the sum covers every y
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-7)


# ---- editing at d = 3 ----------------------------------------------------------------------------


@pytest.fixture
def edit_setup():
    model = d3_model()
    torch.manual_seed(5)
    return model, torch.randn(4, model.latent_dim) * 2


def test_the_slider_moves_z_i_along_u_i_only(edit_setup):
    model, z = edit_setup
    values = torch.tensor([-2.0, 0.3, 1.7, 4.0])
    for i in range(L):
        u = unit(model, i)
        torch.testing.assert_close(editing.direction(model, i), u)
        torch.testing.assert_close(editing.coordinate(model, z, i), z[:, i * d:(i + 1) * d] @ u)
        for value in (1.25, values):
            out = editing.set_coordinate(model, z, i, value)
            torch.testing.assert_close(editing.coordinate(model, out, i), torch.as_tensor(value).expand(4), atol=1e-5, rtol=0)
            z_i, out_i = z[:, model.block(i)], out[:, model.block(i)]
            torch.testing.assert_close(out_i - (out_i @ u)[:, None] * u, z_i - (z_i @ u)[:, None] * u, atol=1e-5, rtol=0)
            assert (out_i != z_i).all()  # all d entries move (u has no zero)
            assert torch.equal(outside(out, i), outside(z, i))  # other blocks and style untouched


def test_sliding_up_raises_q_present_and_the_walk_is_monotone(edit_setup):
    model, z = edit_setup
    for i in range(L):
        t = torch.linspace(-4, 4, 9)
        walk = editing.set_coordinate(model, z[:1].expand(9, -1), i, t)
        p = editing.label_probs(model, walk)[:, i]
        assert (p.diff() > 0).all(), (i, p)
        absent, present = editing.traversal_range(model, i)
        probs = editing.label_probs(model, editing.traverse(model, z, i, steps=8))[..., i]  # (B, 8)
        assert ((probs.diff(dim=1) > 0) if present > absent else (probs.diff(dim=1) < 0)).all()


def test_traversal_range_ends_are_the_prior_means_along_u_plus_margin_stds(edit_setup):
    model, z = edit_setup
    loc, scale = model.prior_params()
    flips = set()
    for i in range(L):
        u, b = unit(model, i), model.block(i)
        mu0, mu1 = float(loc[0, b].detach() @ u), float(loc[1, b].detach() @ u)
        s0 = float((scale[0, b].detach() ** 2 * u ** 2).sum().sqrt())  # std of u . z_i under p(z_i | y_i = 0)
        s1 = float((scale[1, b].detach() ** 2 * u ** 2).sum().sqrt())
        sign = 1.0 if mu1 >= mu0 else -1.0
        flips.add(sign)
        absent, present = editing.traversal_range(model, i, margin=0.8)
        assert absent == pytest.approx(mu0 - sign * 0.8 * s0, abs=1e-5)
        assert present == pytest.approx(mu1 + sign * 0.8 * s1, abs=1e-5)
        walk = editing.traverse(model, z, i, steps=5, margin=0.8)
        ends = editing.coordinate(model, walk[:, [0, -1]], i)
        torch.testing.assert_close(ends, torch.tensor([absent, present]).expand(4, 2), atol=1e-5, rtol=0)
    assert flips == {1.0, -1.0}  # the random model has a reversed axis too: both branches checked


def test_resample_draws_the_whole_block_from_the_conditional_prior_on_its_side(edit_setup):
    model, z = edit_setup
    g = torch.Generator().manual_seed(0)
    many = z[:1].expand(8000, -1)
    moved = []
    for i in range(L):
        for v in (0, 1):
            out = editing.resample_latent(model, many, i, present=bool(v), generator=g)
            assert torch.equal(outside(out, i), outside(many, i))
            assert (editing.is_present(model, out, i) == bool(v)).all(), (i, v)
            draws = out[:, model.block(i)]  # (n, d)
            assert (draws != many[:, model.block(i)]).all()
            # p(z_i | y_i = v) restricted to the classifier's side, in all d dims (reference by rejection)
            ref = prior_on_its_side(model, i, v, 400000)
            moved.append(1 - len(ref) / 400000)
            scale = ref.std(0).max()
            assert (draws.mean(0) - ref.mean(0)).abs().max() < 0.06 * scale, (i, v)
            assert (draws.T.cov() - ref.T.cov()).abs().max() < 0.1 * scale ** 2, (i, v)
    assert max(moved) > 0.05  # the random model's boundaries cut into its priors: the redraw is tested
    assert editing.sample_characteristic(model, 1, True, 7, generator=g).shape == (7, d)


def test_swap_copies_the_donors_whole_block(edit_setup):
    model, z = edit_setup
    donor = torch.randn(4, model.latent_dim) + 10
    for i in range(L):
        out = editing.swap(model, z, donor, i)
        assert torch.equal(out[:, model.block(i)], donor[:, model.block(i)])
        assert torch.equal(outside(out, i), outside(z, i))
        one = editing.swap(model, z, donor[:1], model.label_names[i])  # a (1, D) donor broadcasts
        assert torch.equal(one[:, model.block(i)], donor[:1, model.block(i)].expand(4, d))


def test_clearing_an_exclusive_partner_sets_its_whole_block_to_the_absent_mean():
    model = d3_model(exclusive_labels=[["Eyeglasses", "Smiling"]])
    absent_mean = model.prior_params()[0][0].detach()
    torch.manual_seed(6)
    z = torch.randn(2, model.latent_dim)
    for i in range(L):  # every label present: logit = |w_i| t + b_i with t = 6
        z = editing.set_coordinate(model, z, i, 6.0)
    assert editing.label_probs(model, z).min() > 0.9
    cleared = editing.clear_exclusive(model, z, [0])
    assert torch.equal(cleared[:, 3:6], absent_mean[3:6].expand(2, d))  # Smiling's whole block
    assert torch.equal(cleared[:, :3], z[:, :3]) and torch.equal(cleared[:, 6:], z[:, 6:])
    assert torch.equal(editing.clear_exclusive(model, z, [2]), z)  # Male has no partner
    both = editing.clear_exclusive(model, z, [0, 1])  # a grid over the pair keeps both axes
    assert torch.equal(both, z)
    partner_absent = editing.set_coordinate(model, z, 1, -6.0)
    assert torch.equal(editing.clear_exclusive(model, partner_absent, [0]), partner_absent)
    # the edits that set a block present clear the partner's block the same way
    edited = editing.intervene(model, z, 1, 5.0)
    assert torch.equal(edited[:, :3], absent_mean[:3].expand(2, d))
    donor = z.clone()
    swapped = editing.swap(model, z, donor, 0, as_edits=True)
    assert torch.equal(swapped[:, 3:6], absent_mean[3:6].expand(2, d))


# ---- the intervention aid at d = 3 -------------------------------------------------------------


def test_intervention_edits_replace_the_flipped_block_with_a_prior_draw_and_value_it_by_hand():
    model = d3_model()
    loc, scale = (t.detach() for t in model.prior_params())
    decoded = []
    plain_decode = model.decode
    model.decode = lambda z: decoded.append(z.detach().clone()) or plain_decode(z)
    B = 3000
    torch.manual_seed(7)
    y = torch.randint(0, 2, (B, L)).float()
    z = torch.randn(B, model.latent_dim)
    with torch.no_grad():
        value, label = aids.intervention_edits(model, z, y, generator=torch.Generator().manual_seed(0))
    assert value.shape == label.shape == (B,) and torch.isfinite(value).all() and (value <= 0).all()
    edit = decoded[-1]
    v = 1 - y.gather(1, label[:, None]).squeeze(1).long()
    for i in range(L):
        for side in (0, 1):
            rows = (label == i) & (v == side)
            assert rows.sum() > 300
            assert torch.equal(outside(edit[rows], i), outside(z[rows], i))  # one block changes, nothing else
            b = model.block(i)
            eps = (edit[rows, b] - loc[side, b]) / scale[side, b]  # should be N(0, I) in d dims
            assert eps.mean(0).abs().max() < 0.25 and (eps.std(0) - 1).abs().max() < 0.25, (i, side)
    # the value: log q(y_i = v | z'_i) at the encoder's mean of the decoded edit
    with torch.no_grad():
        z_back = model.encoder(plain_decode(edit))[0]
    logit = (blocks(z_back[:, :L * d]) * blocks(model.classifier_weight)).sum(-1) + model.classifier_bias  # (B, L)
    expected = D.Bernoulli(logits=logit.gather(1, label[:, None]).squeeze(1)).log_prob(v.float())
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-5)


def test_with_gates_the_block_across_the_gate_direction_reaches_the_decoder_only_where_the_label_is_on():
    """d > 1 with label gates: the decoder reads v_i . z_i and g_i * (the rest of z_i), so the free
    directions of a block can draw only what comes with its label (a frame's kind), not style."""
    model = d3_model(label_gates=True).double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.decoder.gate_direction.copy_(torch.randn(L * d, generator=g))
        model.decoder.gate_log_slope.fill_(6.0)  # a sharp step: g_i is 0 or 1 to double precision
    v = blocks(model.decoder.gate_direction.detach())[0]
    u = v / v.norm()
    z = torch.randn(2, model.latent_dim, generator=g, dtype=torch.float64)
    across = torch.randn(d, generator=g, dtype=torch.float64)
    across = across - (across @ u) * u  # orthogonal to v_0
    moved = z.clone()
    moved[:, :d] += 2.0 * across
    for on in (False, True):
        with torch.no_grad():  # label 0's gate off (on) for both rows: its centre far above (below) v_0 . z_0
            model.decoder.gate_center[0] = (z[:, :d] @ v).mean() + (-20.0 if on else 20.0)
        a, b = model.decoder(z), model.decoder(moved)
        if on:
            assert (a - b).abs().max() > 1e-3
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    along = z.clone()
    along[:, :d] += 0.01 * u  # along v_0 the block always reaches the decoder (the gate stays off)
    assert (model.decoder(along) - model.decoder(z)).abs().max() > 1e-6


# ---- checkpoints ---------------------------------------------------------------------------------


def test_a_d3_checkpoint_round_trips_exactly(tmp_path):
    model = d3_model(label_gates=True)
    with torch.no_grad():
        model.decoder.gate_direction.normal_()
    model.set_label_prior([0.3, 0.5, 0.7])
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["characteristic_dim"] == d
    loaded = CCVAE.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and loaded.characteristic_dim == d and loaded.block(2) == slice(6, 9)
    a, b = model.state_dict(), loaded.state_dict()
    assert sorted(a) == sorted(b) and "decoder.gate_direction" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
    z = torch.randn(3, model.latent_dim)
    assert torch.equal(editing.decode(loaded, z), editing.decode(model, z))
    assert editing.traversal_range(loaded, 1) == editing.traversal_range(model, 1)


def test_a_config_saved_before_characteristic_dim_existed_loads_as_the_paper(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    del config["characteristic_dim"]
    config_file.write_text(json.dumps(config))
    loaded = CCVAE.from_pretrained(tmp_path / "m")
    assert loaded.characteristic_dim == 1 and loaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_invalid_characteristic_dims_are_named(tmp_path):
    with pytest.raises(ValueError, match="characteristic_dim must be a whole number >= 1, got 0"):
        CCVAE(label_names=["a", "b"], characteristic_dim=0)
    with pytest.raises(ValueError, match="characteristic_dim must be a whole number >= 1, got 2.7"):
        CCVAE(label_names=["a", "b"], characteristic_dim=2.7)
    with pytest.raises(ValueError, match=r"latent_dim=8 is smaller .*\(3 labels x characteristic_dim 3\)"):
        CCVAE(label_names=["a", "b", "c"], latent_dim=8, characteristic_dim=3)
    d3_model().save_pretrained(tmp_path / "m")
    config_file = tmp_path / "m" / "config.json"
    config = json.loads(config_file.read_text())
    for bad, message in ((0, "characteristic_dim must be a whole number >= 1, got 0"),
                         (2, r"classifier_weight has shape \(9,\), the config needs \(6,\)")):
        config_file.write_text(json.dumps({**config, "characteristic_dim": bad}))
        with pytest.raises(CheckpointError, match=message):  # a CheckpointError is a ValueError
            CCVAE.from_pretrained(tmp_path / "m")


# ---- the app at d = 3 --------------------------------------------------------------------------


def hair_model_d3() -> CCVAE:
    """Black_Hair and Brown_Hair exclusive, Smiling free; blocks of 3 read along random directions,
    present means at +2 along u_i and absent at -2, each with a random offset across u_i."""
    torch.manual_seed(0)
    model = CCVAE(label_names=["Black_Hair", "Brown_Hair", "Smiling"], latent_dim=L * d + S, characteristic_dim=d,
                  image_size=16, channels=[8, 8], hidden_dim=16, exclusive_labels=[["Black_Hair", "Brown_Hair"]])
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        u = blocks(torch.randn(L * d, generator=g))
        u = u / u.norm(dim=-1, keepdim=True)  # (L, d)
        model.classifier_weight.copy_((2 * u).flatten())
        model.classifier_bias.zero_()
        across = torch.randn(2, L, d, generator=g)
        across = across - (across * u).sum(-1, keepdim=True) * u  # orthogonal to u_i
        model.prior_loc.copy_((torch.tensor([-2.0, 2.0])[:, None, None] * u + across).flatten(1))
        model.prior_raw_scale.copy_(0.5 * torch.randn(2, L * d, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def hair_editor() -> app.Editor:
    return app.Editor(hair_model_d3(), examples=[Image.new("RGB", (16, 16))])


def test_a_sliders_value_is_the_coordinate_along_w_i_rounded_to_its_step(hair_editor):
    editor, model = hair_editor, hair_editor.model
    _, z = editor.random_latent(3)
    for i in range(L):
        low, high, step = editor.ranges[i]
        t = float(editing.coordinate(model, z, i)[0])
        assert low <= t <= high
        shown = editor.slider_value(z, i)
        assert shown == pytest.approx(round(t / step) * step, abs=1e-9) and abs(shown - t) <= step / 2 + 1e-9
        moved = editing.set_coordinate(model, z, i, t + 7 * step)  # the slider follows u_i . z_i, not z_i's first entry
        assert editor.slider_value(moved, i) == pytest.approx(shown + 7 * step, abs=1e-9)


@pytest.mark.parametrize("label, present", [(2, None), (0, True)])
def test_five_resample_clicks_give_five_blocks_and_the_slider_shows_each(hair_editor, label, present):
    editor, model = hair_editor, hair_editor.model
    z = torch.cat([editing.set_coordinate(model, torch.zeros(1, L * d), 1, 2.0),  # brown hair
                   torch.tensor([[0.5, -0.5, 1.0, 0.0]])], 1)
    z = editing.set_coordinate(model, z, 0, -2.0)  # no black hair
    z = editing.set_coordinate(model, z, 2, 1.5)  # smiling
    session = app.Session(z_source=z, z=z)
    partners = editor.partners[label]
    kept = [k for k in range(L * d + S) if k // d not in [label, *partners] or k >= L * d]
    seen = [z[0, model.block(label)]]
    u = unit(model, label)
    for seed in range(1, 6):
        out = editor.resample(label, session, present=present, seed=seed)
        session = out[-1]
        new = session.z
        block = new[0, model.block(label)]
        assert all(not torch.allclose(block, old) for old in seen)  # a new block each click
        assert all(not torch.allclose(block - (block @ u) * u, old - (old @ u) * u) for old in seen)  # a new kind too
        seen.append(block)
        assert torch.equal(new[0, kept], z[0, kept])  # nothing else moves
        t = float(editing.coordinate(model, new, label)[0])
        assert out[1] == editor.slider_value(new, label) and t == pytest.approx(out[1], abs=1e-5)
        assert f"(seed {seed})" in out[3]
        assert editing.is_present(model, new, label)[0]  # Smiling was present; Black_Hair asked present
        for j, slider in zip(partners, out[4:4 + len(partners)]):
            assert slider == editor.slider_value(new, j)
            # Brown_Hair read present: a present black hair clears its whole block to the absent mean
            assert torch.equal(new[0, model.block(j)], model.prior_loc[0, model.block(j)].detach())
