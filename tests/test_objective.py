"""The objective against independent evaluations written with torch.distributions."""
import itertools
import math

import pytest
import torch
import torch.distributions as D

from ccvae import objective
from conftest import tiny_batch, tiny_model


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


def test_drawn_samples_match_given_samples_in_value_and_gradient():
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
        out = objective.supervised(model, x, y, k=K, posterior=q, **kwargs)
        return out.bound, torch.autograd.grad(out.loss, list(model.parameters()), allow_unused=True)

    bound_drawn, grads_drawn = loss_and_grads(generator=torch.Generator().manual_seed(3))
    bound_given, grads_given = loss_and_grads(z_noise=(eps_c, eps_s))
    torch.testing.assert_close(bound_drawn, bound_given)
    for a, b in zip(grads_drawn, grads_given):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)


def test_the_loss_is_minus_the_bound_with_the_score_part_taken_from_the_characteristic_terms():
    """Same value as -mean(bound); the classifier's gradient is not the plain one (its score part
    uses R_c over the K samples, not the single-sample log-ratio with log p(x|z) in it)."""
    model = tiny_model().double()
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (4, 3)).double()
    z = model.encode(x).sample(5).detach()
    out = objective.supervised(model, x, y, z=z)
    torch.testing.assert_close(out.loss, -out.bound.mean())
    g_loss = torch.autograd.grad(out.loss, model.classifier_weight, retain_graph=True)[0]
    g_plain = torch.autograd.grad(-out.bound.mean(), model.classifier_weight, retain_graph=True)[0]
    assert not torch.allclose(g_loss, g_plain)
    # decoder and prior get the pathwise gradient of the bound unchanged
    params = list(model.decoder.parameters()) + [model.prior_loc]
    for a, b in zip(torch.autograd.grad(out.loss, params, retain_graph=True),
                    torch.autograd.grad(-out.bound.mean(), params)):
        torch.testing.assert_close(a, b)


def test_objectives_expose_the_posterior_the_decoded_sample_and_log_q_y_given_x():
    model, x, y, q, z = tiny_batch(4, 5)
    out = objective.supervised(model, x, y, z=z, posterior=q)
    assert out.posterior is q and torch.equal(out.z, z[0])
    L = model.num_labels
    expected = torch.logsumexp(objective.log_classifier(model, z[..., :L], y), 0) - math.log(5)
    torch.testing.assert_close(out.log_qyx, expected)
    assert out.log_qyx.requires_grad  # a training aid can weight it
    u = objective.unsupervised(model, x, z=z[0], posterior=q)
    assert u.posterior is q and torch.equal(u.z, z[0]) and u.log_qyx is None


def test_a_log_likelihood_hook_replaces_log_p_x_given_z_in_both_objectives():
    model, x, y, q, z = tiny_batch(3, 4)
    plain = objective.supervised(model, x, y, z=z, posterior=q)
    shifted = objective.supervised(model, x, y, z=z, posterior=q,
                                   log_likelihood=lambda x, logits: model.log_likelihood(x, logits) - 7.0)
    w0 = (objective.log_classifier(model, z[0, :, :3], y) - plain.log_qyx).exp()
    torch.testing.assert_close(shifted.bound, plain.bound - 7.0 * w0)
    u_plain = objective.unsupervised(model, x, z=z[0], posterior=q)
    u_shift = objective.unsupervised(model, x, z=z[0], posterior=q,
                                     log_likelihood=lambda x, logits: model.log_likelihood(x, logits) - 7.0)
    torch.testing.assert_close(u_shift.bound, u_plain.bound - 7.0)


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
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 16, 16\)"):
        objective.unsupervised(model, torch.rand(2, 3, 32, 32))


# --- partly labelled rows ---------------------------------------------------------------------------

def _partial_batch(d=1):
    model = tiny_model(characteristic_dim=d, latent_dim=3 * d + 2).double()
    model.set_label_prior([0.2, 0.5, 0.7])
    with torch.no_grad():
        model.prior_loc.add_(torch.randn_like(model.prior_loc) * 0.3)
    x = torch.rand(6, 3, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 2, (6, 3)).double()
    q = model.encode(x)
    return model, x, y, q, q.sample(7)


def _loss_and_grads(model, result):
    model.zero_grad()
    result.loss.backward(retain_graph=True)
    return result.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("d", [1, 2])
def test_partial_with_every_label_known_is_eq1_in_value_loss_and_gradient(d):
    model, x, y, q, z = _partial_batch(d)
    full = objective.supervised(model, x, y, z=z, posterior=q)
    part = objective.partially_supervised(model, x, y, z=z, posterior=q)
    torch.testing.assert_close(part.bound, full.bound, rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(part.log_qyx, full.log_qyx, rtol=1e-9, atol=1e-8)
    (a, ga), (b, gb) = _loss_and_grads(model, full), _loss_and_grads(model, part)
    torch.testing.assert_close(a, b)
    for g, h in zip(ga, gb):
        torch.testing.assert_close(g, h, rtol=1e-7, atol=1e-8)


def test_partial_with_no_label_known_is_the_unsupervised_elbo_for_the_same_z():
    model, x, y, q, z = _partial_batch()
    unknown = torch.full_like(y, -1)
    part = objective.partially_supervised(model, x, unknown, z=z, posterior=q)
    unsup = objective.unsupervised(model, x, z=z[0], posterior=q)
    torch.testing.assert_close(part.bound, unsup.bound, rtol=1e-9, atol=1e-8)
    torch.testing.assert_close(part.log_qyx, torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    (a, ga), (b, gb) = _loss_and_grads(model, unsup), _loss_and_grads(model, part)
    torch.testing.assert_close(a, b)
    for g, h in zip(ga, gb):
        torch.testing.assert_close(g, h, rtol=1e-7, atol=1e-8)


def test_partial_rows_are_eq1_over_the_known_labels_with_the_unknown_summed_out():
    """Brute force: the bound of a row knowing y_K is the w_K-weighted log-ratio with the
    expectation over y_U written as a sum over every value of y_U (2^|U| terms, joint q and p)."""
    model, x, y, q, z = _partial_batch()
    y[:, 1] = -1
    y[0, 2] = -1
    y[1] = -1  # no label known
    got = objective.partially_supervised(model, x, y, z=z, posterior=q).bound
    K, B, L = z.shape[0], x.shape[0], model.num_labels
    logits = model.classifier_logits(z[..., :L])  # (K, B, L)
    log_px = _likelihood(model, x, model.decode_logits(z[0]))
    log_qz = D.Independent(D.Normal(q.loc, q.scale), 1).log_prob(z[0])
    pi = model.label_prior
    for b in range(B):
        kn = [i for i in range(L) if y[b, i] >= 0]
        un = [i for i in range(L) if y[b, i] < 0]
        log_q_k = sum((D.Bernoulli(logits=logits[:, b, i]).log_prob(y[b, i]) for i in kn), torch.zeros(K, dtype=torch.float64))
        log_qyx = torch.logsumexp(log_q_k, 0) - math.log(K)
        w = (log_q_k[0] - log_qyx).exp()
        total = 0.0
        for bits in itertools.product([0.0, 1.0], repeat=len(un)):
            yy = y[b].clone()
            yy[un] = torch.tensor(bits, dtype=torch.float64)
            log_q_u = sum((D.Bernoulli(logits=logits[0, b, i]).log_prob(yy[i]) for i in un), torch.zeros((), dtype=torch.float64))
            log_p_u = sum((D.Bernoulli(probs=pi[i]).log_prob(yy[i]) for i in un), torch.zeros((), dtype=torch.float64))
            ratio = (log_px[b] + _log_p_z_given_y(model, z[0, b], yy) - log_q_k[0] - log_qz[b] + log_p_u - log_q_u)
            total = total + log_q_u.exp() * ratio
        log_p_k = sum((D.Bernoulli(probs=pi[i]).log_prob(y[b, i]) for i in kn), torch.zeros((), dtype=torch.float64))
        torch.testing.assert_close(got[b], w * total + log_qyx + log_p_k, rtol=1e-9, atol=1e-7)
