"""The objective against independent evaluations written with torch.distributions."""
import itertools
import math

import pytest
import torch
import torch.distributions as D

from ccvae import objective
from conftest import tiny_model


def _likelihood(model, x, logits):
    mean = torch.sigmoid(logits)
    kind, s = model.config["likelihood"], model.likelihood_scale()
    dist = {"laplace": lambda: D.Laplace(mean, s), "gaussian": lambda: D.Normal(mean, s),
            "bernoulli": lambda: D.Bernoulli(logits=logits, validate_args=False)}[kind]()
    return dist.log_prob(x).flatten(1).sum(1)


def _log_p_z_given_y(model, z, y):
    L = model.num_labels
    loc, scale = model.prior_params()
    yl = y.long()
    pz_c = D.Normal(loc.gather(0, yl) if yl.dim() == 2 else loc[yl, torch.arange(L)],
                    scale.gather(0, yl) if yl.dim() == 2 else scale[yl, torch.arange(L)])
    return pz_c.log_prob(z[..., :L]).sum(-1) + D.Normal(0.0, 1.0).log_prob(z[..., L:]).sum(-1)


@pytest.mark.parametrize("likelihood", ["laplace", "gaussian", "bernoulli"])
def test_supervised_equals_plain_monte_carlo_of_eq1(likelihood):
    model = tiny_model(likelihood=likelihood).double()
    model.set_label_prior([0.2, 0.5, 0.7])
    torch.manual_seed(1)
    B, K, L = 5, 7, model.num_labels
    x = torch.rand(B, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (B, L)).double()
    q = model.encode(x)
    z = q.sample(K)  # (K, B, D)

    got = objective.supervised(model, x, y, z=z, posterior=q).bound

    qz = D.Independent(D.Normal(q.loc, q.scale), 1)
    q_y_zc = D.Independent(D.Bernoulli(logits=model.classifier_logits(z[..., :L])), 1)
    log_q_y_zc = q_y_zc.log_prob(y.expand(K, B, L))  # (K, B)
    log_q_y_x = torch.log(log_q_y_zc.exp().mean(0))
    w = log_q_y_zc[0].exp() / log_q_y_x.exp()
    loc, scale = model.prior_params()
    p_zc = D.Normal(torch.where(y.bool(), loc[1], loc[0]), torch.where(y.bool(), scale[1], scale[0]))
    log_p_z_y = p_zc.log_prob(z[0, :, :L]).sum(-1) + D.Normal(0.0, 1.0).log_prob(z[0, :, L:]).sum(-1)
    log_ratio = _likelihood(model, x, model.decode_logits(z[0])) + log_p_z_y - log_q_y_zc[0] - qz.log_prob(z[0])
    log_py = D.Independent(D.Bernoulli(probs=model.label_prior), 1).log_prob(y)
    expected = w * log_ratio + log_q_y_x + log_py

    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("weight_grad", ["characteristic", "full"])
def test_drawn_samples_match_given_samples_in_value_and_gradient(weight_grad):
    """Drawn inside, only z_c gets K samples and log q is taken from the noise; the bound and
    every parameter's gradient equal those for the same z passed in (z_s of the extra samples
    is unused)."""
    model = tiny_model().double()
    B, K, L, D_ = 4, 6, model.num_labels, model.latent_dim
    x = torch.rand(B, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (B, L)).double()
    g = torch.Generator().manual_seed(3)
    eps_c = torch.randn((K, B, L), generator=g, dtype=torch.float64)
    eps_s = torch.randn((B, D_ - L), generator=g, dtype=torch.float64)

    def loss_and_grads(**kwargs):
        q = model.encode(x)
        if "z_noise" in kwargs:
            eps_c, eps_s = kwargs.pop("z_noise")
            z_s = torch.cat([eps_s[None], torch.randn(K - 1, B, D_ - L, dtype=torch.float64)])  # extra z_s: unused
            kwargs["z"] = torch.cat([q.loc[:, :L] + q.scale[:, :L] * eps_c, q.loc[:, L:] + q.scale[:, L:] * z_s], -1)
        out = objective.supervised(model, x, y, k=K, posterior=q, weight_grad=weight_grad, **kwargs)
        return out.bound, torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)

    bound_drawn, grads_drawn = loss_and_grads(generator=torch.Generator().manual_seed(3))
    bound_given, grads_given = loss_and_grads(z_noise=(eps_c, eps_s))
    torch.testing.assert_close(bound_drawn, bound_given)
    for a, b in zip(grads_drawn, grads_given):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)


def test_weight_grad_modes_share_the_value_and_full_is_the_plain_gradient():
    model = tiny_model().double()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (4, 3)).double()
    q = model.encode(x)
    z = q.sample(5).detach()
    a = objective.supervised(model, x, y, z=z, weight_grad="characteristic")
    b = objective.supervised(model, x, y, z=z, weight_grad="full")
    torch.testing.assert_close(a.loss, b.loss)
    g_full = torch.autograd.grad(b.loss, model.classifier_weight, retain_graph=True)[0]
    g_plain = torch.autograd.grad(-b.bound.mean(), model.classifier_weight)[0]
    torch.testing.assert_close(g_full, g_plain)
    g_char = torch.autograd.grad(a.loss, model.classifier_weight)[0]
    assert not torch.allclose(g_char, g_full)  # the variance-reduced score term differs


def test_weight_is_bounded_by_k():
    model = tiny_model()
    with torch.no_grad():
        model.classifier_bias.fill_(30.0)
    x = torch.rand(3, 3, 16, 16)
    y = torch.zeros(3, 3)
    for k in (1, 2, 50):
        terms = objective.supervised(model, x, y, k=k).terms
        assert terms["weight_max"] <= k * (1 + 1e-5)


@pytest.mark.parametrize("L", [1, 3, 5])
def test_unsupervised_equals_brute_force_sum_over_all_label_vectors(L):
    model = tiny_model(labels=[f"l{i}" for i in range(L)], latent_dim=L + 2).double()
    model.set_label_prior(torch.linspace(0.1, 0.9, L))
    with torch.no_grad():
        model.prior_loc.add_(torch.randn_like(model.prior_loc) * 0.3)
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    q = model.encode(x)
    z = q.sample()
    got = objective.unsupervised(model, x, z=z, posterior=q).bound

    log_px = _likelihood(model, x, model.decode_logits(z))
    log_qz = D.Independent(D.Normal(q.loc, q.scale), 1).log_prob(z)
    q_y = D.Independent(D.Bernoulli(logits=model.classifier_logits(z[:, :L])), 1)
    p_y = D.Independent(D.Bernoulli(probs=model.label_prior), 1)
    total = torch.zeros(4, dtype=torch.float64)
    for bits in itertools.product([0.0, 1.0], repeat=L):
        y = torch.tensor(bits, dtype=torch.float64).expand(4, L)
        log_q = q_y.log_prob(y)
        total = total + log_q.exp() * (log_px + _log_p_z_given_y(model, z, y) + p_y.log_prob(y) - log_q - log_qz)
    torch.testing.assert_close(got, total, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("likelihood", ["laplace", "gaussian", "bernoulli"])
@pytest.mark.parametrize("image", ["black", "white"])
@pytest.mark.parametrize("k", [1, 100])
@pytest.mark.parametrize("logit", [-50.0, 50.0])
def test_gradients_finite_at_the_edges(likelihood, image, k, logit):
    model = tiny_model(likelihood=likelihood, likelihood_scale=0.01)
    with torch.no_grad():
        model.classifier_bias.fill_(logit)
        model.classifier_weight.fill_(5.0)
    x = torch.full((3, 3, 16, 16), 0.0 if image == "black" else 1.0)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    loss = objective.supervised(model, x, y, k=k).loss + objective.unsupervised(model, x).loss
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_bad_arguments_are_named():
    model = tiny_model()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="k must be at least 1"):
        objective.supervised(model, x, torch.zeros(2, 3), k=0)
    with pytest.raises(ValueError, match=r"labels have shape \(2, 2\)"):
        objective.supervised(model, x, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="weight_grad"):
        objective.supervised(model, x, torch.zeros(2, 3), weight_grad="nope")
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 16, 16\)"):
        objective.unsupervised(model, torch.rand(2, 3, 32, 32))


def _plain_supervised():
    """A tiny float64 model, a batch (x, y), q(z|x), 5 samples z and Eq. 1 alone at them."""
    model = tiny_model().double()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (4, 3)).double()
    q = model.encode(x)
    z = q.sample(5)
    return model, x, y, q, z, objective.supervised(model, x, y, z=z, posterior=q)


def test_loss_options_leave_the_bound_alone_and_add_their_terms():
    model, x, y, q, z, plain = _plain_supervised()
    tuned = objective.supervised(model, x, y, z=z, posterior=q, classification_weight=10.0, style_kl_weight=3.0)
    torch.testing.assert_close(tuned.bound, plain.bound)
    L = model.num_labels
    kl_s = (0.5 * (q.scale[:, L:] ** 2 + q.loc[:, L:] ** 2 - 1 - torch.log(q.scale[:, L:] ** 2))).sum(-1).mean()
    log_qyx = (torch.logsumexp(objective.log_classifier(model, z[..., :L], y), 0) - math.log(5)).mean()
    torch.testing.assert_close(tuned.loss, plain.loss - 10.0 * log_qyx + 2.0 * kl_s)
    u_plain = objective.unsupervised(model, x, z=z[0], posterior=q)
    u_tuned = objective.unsupervised(model, x, z=z[0], posterior=q, style_kl_weight=3.0)
    torch.testing.assert_close(u_tuned.loss, u_plain.loss + 2.0 * kl_s)


def test_intervention_consistency_targets_the_flipped_label_and_trains_only_the_decoder_side():
    model = tiny_model().double()
    torch.manual_seed(3)
    x = torch.rand(6, 3, 16, 16, dtype=torch.float64)
    z = model.encode(x).sample()  # (B, D), through the encoder
    with torch.no_grad():  # a classifier that reads every label as present, whatever the image
        model.classifier_weight.zero_()
        model.classifier_bias.fill_(30.0)
    ones, zeros = torch.ones(6, 3, dtype=torch.float64), torch.zeros(6, 3, dtype=torch.float64)
    # labels all present: every edit flips one to absent, which this classifier never reads
    torch.testing.assert_close(objective.intervention_consistency(model, z.detach(), ones),
                               torch.full((6,), -30.0, dtype=torch.float64), atol=1e-9, rtol=0)
    # labels all absent: every edit asks for present, which it always reads
    got = objective.intervention_consistency(model, z, zeros)
    assert got.shape == (6,) and (got > -1e-9).all() and (got <= 0).all()

    model = tiny_model()
    x, y = torch.rand(4, 3, 16, 16), torch.randint(0, 2, (4, 3)).float()
    objective.intervention_consistency(model, model.encode(x).sample(), y).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for name, g in grads.items():  # the judge (classifier, prior) takes nothing; decoder and encoder (via z) do
        if name.startswith(("classifier", "prior")):
            assert g is None or not g.any(), name
    assert any(g is not None and g.any() for n, g in grads.items() if n.startswith("decoder")), "decoder"
    assert any(g is not None and g.any() for n, g in grads.items() if n.startswith("encoder")), "encoder via z"


def test_intervention_consistency_judge_gets_no_gradient_through_the_edited_image():
    model = tiny_model()
    torch.manual_seed(4)
    y = torch.randint(0, 2, (4, 3)).float()
    z = torch.randn(4, model.latent_dim)  # no path into the encoder except as the judge
    objective.intervention_consistency(model, z, y).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.decoder.parameters())


def test_intervention_consistency_draws_only_edits_compatible_with_exclusive_labels():
    model = tiny_model()
    with torch.no_grad():  # the value names the edited label: ~0 for a removal, -20 for adding 1, -30 for adding 2
        model.classifier_weight.zero_()
        model.classifier_bias.copy_(torch.tensor([-10.0, -20.0, -30.0]))
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(100, 1)  # (200, 3)
    z = torch.randn(200, model.latent_dim)
    exclusive = torch.zeros(3, 3, dtype=torch.bool)
    exclusive[0, 1] = exclusive[1, 0] = True  # labels 0 and 1 never present together
    with torch.no_grad():
        free = objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0))
        kept = objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0),
                                                  exclusive=exclusive)
    added = lambda t, value: bool(((t - value).abs() < 0.01).any())  # noqa: E731
    assert added(free[0::2], -20.0) and added(free[1::2], -10.0)  # unrestricted: exclusive pairs get made
    assert not added(kept[0::2], -20.0) and not added(kept[1::2], -10.0)  # restricted: never
    assert added(kept, -30.0) and added(kept, 0.0)  # the compatible edits are still drawn
    with pytest.raises(ValueError, match=r"exclusive has shape \(2, 2\), expected \(3, 3\)"):
        objective.intervention_consistency(model, z, y, exclusive=torch.zeros(2, 2, dtype=torch.bool))


def _recording_model():
    """A tiny model with p(z_i | y_i = 0) at -50 and p(z_i | y_i = 1) at +50, both narrow, whose
    decode records the latents it is given: (model, list of the (B, D) latents decoded)."""
    model = tiny_model()
    with torch.no_grad():
        model.prior_loc.copy_(torch.tensor([[-50.0] * 3, [50.0] * 3]))
        model.prior_raw_scale.fill_(-10.0)
    decoded = []
    plain_decode = model.decode
    model.decode = lambda z: decoded.append(z.detach().clone()) or plain_decode(z)
    return model, decoded


def test_intervention_consistency_with_clear_adds_the_label_after_clearing_its_exclusive_partner():
    model, decoded = _recording_model()
    y = torch.tensor([[1.0, 0.0, 0.0]]).repeat(300, 1)  # every face has label 0, exclusive with label 1
    z = torch.randn(300, model.latent_dim)
    exclusive = torch.zeros(3, 3, dtype=torch.bool)
    exclusive[0, 1] = exclusive[1, 0] = True
    with torch.no_grad():
        objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0),
                                           exclusive=exclusive, clear=True)
    edit = decoded[-1]
    added1, added2, removed0 = edit[:, 1] > 40, edit[:, 2] > 40, (edit[:, 0] < -40) & (edit[:, 1] < 40)
    assert added1.any() and added2.any() and removed0.any()  # any flip is drawn
    assert (edit[added1, 0] < -40).all()  # adding label 1 cleared label 0 first
    assert torch.equal(edit[added2, 0], z[added2, 0])  # label 2 goes with label 0: kept
    assert torch.equal(edit[:, 3:], z[:, 3:])  # the style latents never change
    with torch.no_grad():  # without clear, the compatible flips never add label 1 here
        objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0), exclusive=exclusive)
    assert not (decoded[-1][:, 1] > 40).any()


def test_precedence_lifts_an_exclusive_pair_one_way_in_list_order():
    exclusive = torch.zeros(4, 4, dtype=torch.bool)
    for i, j in [(0, 1), (0, 2), (1, 2)]:  # 0, 1 and 2 pairwise exclusive; 3 free
        exclusive[i, j] = exclusive[j, i] = True
    torch.testing.assert_close(objective.with_precedence(exclusive, []), exclusive)
    lifted = objective.with_precedence(exclusive, [2, 0])  # 2 wins over 0 and 1, 0 over 1
    expected = exclusive.clone()
    expected[2, 0] = expected[2, 1] = expected[0, 1] = False  # row: the label added
    torch.testing.assert_close(lifted, expected)
    assert lifted[0, 2] and lifted[1, 0] and lifted[1, 2]  # the losers' edits still respect the winners
    assert not lifted[:, 3].any() and not lifted[3].any()  # a listed order never makes a pair exclusive
    for order in ([0, 0], [4], [-1]):
        with pytest.raises(ValueError, match=r"order must list distinct labels in 0\.\.3"):
            objective.with_precedence(exclusive, order)


@pytest.mark.parametrize("clear", [False, True])
def test_an_edit_adding_a_label_with_precedence_keeps_its_exclusive_partner_and_the_reverse_does_not(clear):
    model, decoded = _recording_model()
    y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(150, 1)  # label 0 or label 1, exclusive
    z = torch.where(y.bool(), 50.0, -50.0)
    z = torch.cat([z, torch.randn(300, model.latent_dim - 3)], 1)
    exclusive = torch.zeros(3, 3, dtype=torch.bool)
    exclusive[0, 1] = exclusive[1, 0] = True
    with torch.no_grad():
        objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0),
                                           exclusive=objective.with_precedence(exclusive, [1]), clear=clear)
    edit = decoded[-1]
    both = (edit[:, 0] > 40) & (edit[:, 1] > 40)
    assert both[0::2].any() and not both[1::2].any()  # adding 1 to a face of 0 keeps 0; adding 0 to 1 never does
    added_1 = (y[:, 1] == 0) & (edit[:, 1] > 40)  # rows of label 0 that got label 1 added
    assert added_1.any() and (edit[added_1, 0] > 40).all()  # label 1 wins: label 0 stays present
    added_0 = (y[:, 0] == 0) & (edit[:, 0] > 40)  # rows of label 1 that got label 0 added
    if clear:
        assert added_0.any() and (edit[added_0, 1] < -40).all()  # drawn with label 1 cleared first
    else:
        assert not added_0.any()  # never drawn


def test_latent_judge_values_how_far_the_edit_encodes_back_from_the_value_it_was_given():
    model = tiny_model().double()
    with torch.no_grad():  # an encoder whose posterior mean is c whatever the image
        model.encoder.loc.weight.zero_()
        c = torch.linspace(-1.0, 1.5, model.latent_dim, dtype=torch.float64)
        model.encoder.loc.bias.copy_(c)
        model.prior_loc.copy_(torch.tensor([[-1.0, -2.0, -3.0], [1.0, 2.0, 3.0]]))
        model.prior_raw_scale.copy_(torch.tensor([[0.0, 1.0, 2.0], [-1.0, 0.5, 1.5]]))
        model.classifier_weight.zero_()
        model.classifier_bias.fill_(30.0)  # reads every label present: adding one costs ~nothing
    decoded = []
    plain_decode = model.decode
    model.decode = lambda z: decoded.append(z.detach().clone()) or plain_decode(z)
    torch.manual_seed(5)
    y = torch.randint(0, 2, (40, 3)).double()
    z = torch.randn(40, model.latent_dim, dtype=torch.float64)
    got = objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(1), judge="latent")
    edit = decoded[-1]
    i = (edit != z).double().argmax(1)  # the edited label of each row
    v = 1 - y.gather(1, i[:, None]).squeeze(1).long()
    _, scale = model.prior_params()
    z_i = edit.gather(1, i[:, None]).squeeze(1)
    torch.testing.assert_close(got, -0.5 * ((c[i] - z_i) / scale[v, i]) ** 2)
    # where the classifier's reading saturates (all labels absent, every edit adds one it reads
    # as present) it gives the decoder nothing to learn; the latent judge still does
    zeros = torch.zeros(6, 3, dtype=torch.float64)
    model.decode = plain_decode
    with torch.no_grad():
        model.encoder.loc.weight.normal_()
        model.classifier_weight.fill_(1.0)  # logit 30 + z'_i: saturated, though it depends on the image
    for judge, moves in (("classifier", False), ("latent", True)):
        model.zero_grad()
        objective.intervention_consistency(model, z[:6], zeros, judge=judge).sum().backward()
        grad = sum(p.grad.abs().sum() for p in model.decoder.parameters() if p.grad is not None)
        assert (float(grad) > 1e-6) == moves, (judge, float(grad))
    with pytest.raises(ValueError, match="unknown judge 'oracle'"):
        objective.intervention_consistency(model, z, y, judge="oracle")


def test_intervention_weight_adds_its_term_and_leaves_the_bound_alone():
    model, x, y, q, z, plain = _plain_supervised()
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    tuned = objective.supervised(model, x, y, z=z, posterior=q, intervention_weight=5.0, intervention_batch=3, generator=g1)
    torch.testing.assert_close(tuned.bound, plain.bound)
    edit = objective.intervention_consistency(model, z[0][:3], y[:3], generator=g2)
    torch.testing.assert_close(tuned.loss, plain.loss - 5.0 * edit.mean())
    assert 0.0 <= float(tuned.terms["intervention_accuracy"]) <= 1.0
    g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    latent = objective.supervised(model, x, y, z=z, posterior=q, intervention_weight=5.0, intervention_batch=3,
                                  intervention_judge="latent", generator=g1)
    edit = objective.intervention_consistency(model, z[0][:3], y[:3], generator=g2, judge="latent")
    torch.testing.assert_close(latent.loss, plain.loss - 5.0 * edit.mean())
    torch.testing.assert_close(latent.terms["intervention_latent_error"], (-2 * edit).sqrt().mean())
    with pytest.raises(ValueError, match="unknown intervention_judge 'oracle'"):
        objective.supervised(model, x, y, intervention_weight=1.0, intervention_judge="oracle")
    with pytest.raises(ValueError, match="intervention_weight must be >= 0"):
        objective.supervised(model, x, y, intervention_weight=-1.0)
    with pytest.raises(ValueError, match="intervention_batch >= 1, got 1.0 and 0"):
        objective.supervised(model, x, y, intervention_weight=1.0, intervention_batch=0)


def test_residual_emphasis_keeps_every_value_and_scales_each_pixels_gradient_by_its_error():
    from ccvae.distributions import emphasise_residuals, image_log_likelihood
    torch.manual_seed(3)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.1, dtype=torch.float64)
    assert emphasise_residuals(x, logits, 0) is logits
    plain = image_log_likelihood(x, logits, "gaussian", s)
    (g_plain,) = torch.autograd.grad(plain.sum(), logits)
    for power in (1.0, 2.0):
        emph = image_log_likelihood(x, logits, "gaussian", s, emphasis=power)
        torch.testing.assert_close(emph, plain)  # the value is the plain log-likelihood
        (g,) = torch.autograd.grad(emph.sum(), logits)
        r = ((x - torch.sigmoid(logits)) ** 2).sum(1, keepdim=True).add(1e-4).sqrt() ** power
        torch.testing.assert_close(g, g_plain * r / r.mean((2, 3), keepdim=True))  # weights average 1 per image
    # the worst pixel gains the most pull
    worst = ((x - torch.sigmoid(logits)) ** 2).sum(1)[0].argmax()
    (g,) = torch.autograd.grad(image_log_likelihood(x, logits, "gaussian", s, emphasis=1.0).sum(), logits)
    ratio = (g[0].abs().sum(0) / g_plain[0].abs().sum(0)).flatten()
    assert ratio.argmax() == worst and ratio.max() > 1
    with pytest.raises(ValueError, match="residual emphasis must be a finite power >= 0, got -1"):
        emphasise_residuals(x, logits, -1)
    with pytest.raises(ValueError, match="finite power >= 0, got inf"):
        emphasise_residuals(x, logits, math.inf)


def test_a_floor_under_the_residuals_flattens_the_weights_and_keeps_the_values():
    from ccvae.distributions import Emphasis, emphasise_residuals, image_log_likelihood
    torch.manual_seed(4)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.1, dtype=torch.float64)
    plain = image_log_likelihood(x, logits, "gaussian", s)
    (g_plain,) = torch.autograd.grad(plain.sum(), logits)

    def grad(emphasis):
        value = image_log_likelihood(x, logits, "gaussian", s, emphasis=emphasis)
        torch.testing.assert_close(value, plain)  # the value never changes
        return torch.autograd.grad(value.sum(), logits)[0]
    assert torch.equal(grad(Emphasis(1.0)), grad(1.0))  # a bare power is the default floor, 0.01
    r2 = ((x - torch.sigmoid(logits)) ** 2).sum(1, keepdim=True)
    spread = []
    for eps in (0.01, 0.3, 3.0):
        w = (r2 + eps ** 2).sqrt()
        g = grad(Emphasis(1.0, eps))
        torch.testing.assert_close(g, g_plain * w / w.mean((2, 3), keepdim=True))  # r / mean(r), r^2 floored at eps^2
        spread.append(float((g / g_plain).std()))
    assert spread[0] > spread[1] > spread[2]  # a higher floor pulls the weights towards the plain gradient's 1
    for eps in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match=f"residual emphasis floor must be a finite number > 0, got {eps}"):
            emphasise_residuals(x, logits, Emphasis(1.0, eps))
    assert emphasise_residuals(x, logits, Emphasis(0.0, 0.0)) is logits  # power 0: off, the floor unread


def test_objectives_pass_the_emphasis_to_the_likelihood_and_keep_the_bound():
    model, x, y, q, z, plain = _plain_supervised()
    emph = objective.supervised(model, x, y, z=z, posterior=q, emphasis=1.0)
    torch.testing.assert_close(emph.bound, plain.bound)
    torch.testing.assert_close(emph.loss, plain.loss)
    params = list(model.decoder.parameters())
    g_plain = torch.autograd.grad(plain.loss, params, retain_graph=True)
    g_emph = torch.autograd.grad(emph.loss, params)
    assert not all(torch.allclose(a, b) for a, b in zip(g_plain, g_emph))  # the decoder learns otherwise
    u_plain = objective.unsupervised(model, x, z=z[0], posterior=q)
    u_emph = objective.unsupervised(model, x, z=z[0], posterior=q, emphasis=2.0)
    torch.testing.assert_close(u_emph.loss, u_plain.loss)


def test_edit_focus_is_uniform_without_misses_and_follows_the_miss_rate_as_asked():
    none = torch.zeros(2, 3)
    assert torch.equal(objective.edit_focus(none, 0.7), torch.ones(3))  # nothing drawn yet: the prior alone
    drawn = torch.tensor([[100.0, 100.0, 100.0], [1.0, 3.0, 11.0]])  # miss rates (with the prior) ~0.01, 0.03, 0.11
    miss = (drawn[1] + 0.05) / (drawn[0] + 1)
    assert torch.equal(objective.edit_focus(drawn, 0.0), torch.ones(3))
    torch.testing.assert_close(objective.edit_focus(drawn, 1.0), miss / miss.mean())
    half = objective.edit_focus(drawn, 0.5)
    torch.testing.assert_close(half, 0.5 + 0.5 * miss / miss.mean())
    assert half.mean().item() == pytest.approx(1.0) and half.min() >= 0.5  # every label keeps half its share
    with pytest.raises(ValueError, match=r"the intervention focus must lie in \[0, 1\], got 1.5"):
        objective.edit_focus(drawn, 1.5)


def test_intervention_focus_draws_labels_by_weight_within_the_compatible_edits_and_counts_them():
    model = tiny_model()
    with torch.no_grad():  # the value names the edited label: ~0 for a removal, -20 for adding 1, -30 for adding 2
        model.classifier_weight.zero_()
        model.classifier_bias.copy_(torch.tensor([-10.0, -20.0, -30.0]))
    y = torch.zeros(300, 3)
    z = torch.randn(300, model.latent_dim)
    heavy = torch.tensor([1e-6, 1e-6, 1.0])
    with torch.no_grad():
        got = objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0), focus=heavy)
    assert ((got + 30).abs() < 0.01).float().mean() > 0.99  # almost every row adds label 2
    exclusive = torch.zeros(3, 3, dtype=torch.bool)
    exclusive[0, 2] = exclusive[2, 0] = True
    y[:, 0] = 1  # label 2 is blocked on every face: its weight cannot bring it back
    with torch.no_grad():
        got = objective.intervention_consistency(model, z, y, generator=torch.Generator().manual_seed(0),
                                                 exclusive=exclusive, focus=heavy)
    assert not ((got + 30).abs() < 0.01).any() and ((got + 20).abs() < 0.01).any()
    with pytest.raises(ValueError, match=r"focus must hold one weight per label, shape \(3,\), got \(2,\)"):
        objective.intervention_consistency(model, z, y, focus=torch.ones(2))
    # supervised counts, per label, the edits it drew and their misses
    x, y = torch.rand(6, 3, 16, 16), torch.randint(0, 2, (6, 3)).float()
    out = objective.supervised(model, x, y, k=4, generator=torch.Generator().manual_seed(0), intervention_weight=1.0,
                               intervention_batch=5, intervention_focus=torch.ones(3))
    assert out.edits.shape == (2, 3) and out.edits[0].sum().item() == 5
    assert (out.edits[1] >= 0).all() and (out.edits[1] <= out.edits[0]).all()
    assert objective.supervised(model, x, y, k=4).edits is None  # no term, no counts
