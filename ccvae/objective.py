"""The CCVAE objective: the supervised bound (paper Eq. 1), the unsupervised ELBO, and both at
once for partly labelled rows.

Both return an `Objective`: the per-example bound, the scalar loss whose gradient training
follows, named terms for logging, and the pieces a training loop may build on (the posterior,
the sample the decoder saw, log q(y|x)). Shapes: B images, L labels, D latents, K samples;
z_c = z[..., :C] with C = L d (d = model.characteristic_dim entries per label).

Supervised (x, y observed), Eq. 1 of Joy et al. (2021):

    L(x, y) = E_q(z|x)[ w(z_c) log( p(x|z) p(z|y) / (q(y|z_c) q(z|x)) ) ] + log q(y|x) + log p(y),
    w(z_c)  = q(y|z_c) / q(y|x),     q(y|x) ~= (1/K) sum_k q(y|z_c^k),   z^k ~ q(z|x).

All K samples come from one encoder pass; z^1 is also the sample the decoder sees, so the value
is the plain single-sample Monte Carlo estimate of Eq. 1 with a K-sample q(y|x). log w is
computed in log space and never exceeds log K, because z^1 is one of the K samples.

Unsupervised (x only): the ELBO with y marginalised exactly. q(y|z_c), p(z_c|y) and p(y) factorise
over labels, so E_q(y|z_c)[.] is a sum over y_i in {0, 1} for each label: 2L terms, not 2^L,
and no sampled y (the official PyTorch code samples y with no score-function term, so its
unlabelled data never trains the classifier; here the classifier gets exact gradients).

Partly labelled (x, and y with unknown cells, y_i = -1): the known set K gets Eq. 1 and the
unknown set U is marginalised per label exactly as in the unsupervised ELBO. Because every
factor splits over labels, with w_K(z_c) = q(y_K|z_c) / q(y_K|x) and q(y_K|x) ~= (1/K') sum_k q(y_K|z_c^k):

    L(x, y_K) = E_q(z|x)[ w_K(z_c) ( log p(x|z) + log p(z_s) - log q(z|x)
                                      + sum_{i in K} (log p(z_i|y_i) - log q(y_i|z_i))
                                      + sum_{i in U} sum_{v in {0,1}} q(y_i=v|z_i) (log p(z_i|y_i=v)
                                                                  + log p(y_i=v) - log q(y_i=v|z_i)) ) ]
                + log q(y_K|x) + log p(y_K).

U empty: Eq. 1. K empty: w = 1, log q(y_K|x) = log p(y_K) = 0, the unsupervised ELBO. A training
aid weighting log q(y|x) (alpha) then weights log q(y_K|x), the labels the row has.

Which factors carry gradients (supervised term). Every factor does, through the
reparameterised z and through the classifier. For the weight w, the gradient of E[w R]
(R = the log-ratio in the bracket) has a score-like part E[grad(w) R]. Because E_q(z|x)[w] = 1,
this part is unchanged by subtracting anything from R that does not depend on z_c, and the
terms of R that depend only on z_s (log p(z_s) - log q(z_s|x)) contribute nothing in
expectation. The large, noisy part is log p(x|z): it is thousands of nats for a sharp
likelihood, and multiplying grad(w) by it is what made the official code unstable at small
likelihood scales. The score part here therefore uses R_c(z_c) = log p(z_c|y) - log q(z_c|x)
- log q(y|z_c), averaged over all K samples, and drops the reconstruction and style terms from
it; the pathwise gradient w * grad(R) keeps them all. The value of the bound is unchanged. In
expectation the direct classifier gradients of log q(y|x) and of -w log q(y|z_c) cancel: the
classifier learns through grad(w) R, which is why that part is kept, with the cheaper,
lower-variance R_c.

Nothing here goes beyond Eq. 1 and the ELBO; training aids (an extra classification weight,
the intervention term, residual emphasis) live with the training loop in `train/aids.py`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .distributions import DiagonalGaussian, gaussian_log_prob, upcast

LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, logits) -> (B,)


@dataclass
class Objective:
    """bound: (B,) the per-example bound; loss: scalar to minimise (-mean(bound), with the gradient
    the module docstring describes); terms: detached 0-dim tensors for logging (on the model's
    device: a training loop sums them as tensors and reads the sums once per log line).
    posterior: q(z|x) of the batch; z: (B, D) the sample the decoder saw; log_qyx: (B,) log q(y|x)
    with its gradient (supervised only), for training aids that weight it."""

    bound: torch.Tensor
    loss: torch.Tensor
    posterior: DiagonalGaussian
    z: torch.Tensor
    log_qyx: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def log_label_prior(model, y: torch.Tensor) -> torch.Tensor:
    """log p(y) for y (..., L) in {0, 1}: (...)."""
    pi = model.label_prior
    return (y * pi.log() + (1 - y) * torch.log1p(-pi)).sum(-1)


def log_classifier(model, z_c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log q(y | z_c) = sum_i log q(y_i | z_i), for z_c (..., L d), y (..., L) broadcastable: (...)."""
    logits = model.classifier_logits(z_c)
    return -F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype).expand_as(logits), reduction="none").sum(-1)


def _log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)


def _samples(q: DiagonalGaussian, C: int, k: int, generator, z):
    """(z_c (K, B, C), z^1 (B, D), log q(z_c^k|x) (K, B), log q(z_s^1|x) (B,)): K samples of z_c and
    one of z_s from q, or those of the given z (K, B, D)."""
    loc_c, scale_c, loc_s, scale_s = q.loc[:, :C], q.scale[:, :C], q.loc[:, C:], q.scale[:, C:]
    if z is None:
        # Only z_c needs K samples (for q(y|x)); z_s is needed once, for z^1. At a
        # reparameterised sample, log N(loc + scale * eps; loc, scale) = log N(eps; 0, 1) - log scale,
        # with the same value and the same gradient as evaluating the density at z.
        eps_c = torch.randn((k, *loc_c.shape), generator=generator, device=loc_c.device, dtype=loc_c.dtype)
        eps_s = torch.randn(loc_s.shape, generator=generator, device=loc_s.device, dtype=loc_s.dtype)
        z_c = loc_c + scale_c * eps_c  # (K, B, C)
        z0 = torch.cat([z_c[0], loc_s + scale_s * eps_s], -1)  # (B, D), the sample the decoder sees
        log_qzc = _log_standard_normal(eps_c) - scale_c.log().sum(-1)  # (K, B)
        log_qzs = _log_standard_normal(eps_s) - scale_s.log().sum(-1)  # (B,)
    else:
        z_c, z0 = z[..., :C], z[0]  # (K, B, C), (B, D)
        log_qzc = gaussian_log_prob(z_c, loc_c, scale_c).sum(-1)  # (K, B)
        log_qzs = gaussian_log_prob(z0[:, C:], loc_s, scale_s).sum(-1)  # (B,)
    return z_c, z0, log_qzc, log_qzs


def supervised(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 100,
    generator: torch.Generator | None = None,
    z: torch.Tensor | None = None,
    posterior: DiagonalGaussian | None = None,
    log_likelihood: LogLikelihood | None = None,
) -> Objective:
    """Eq. 1 for a labelled batch. x: (B, C, H, W) in [0, 1]; y: (B, L) in {0, 1}.

    k: samples of q(z_c|x) that estimate q(y|x). z: optional samples (K, B, D) to use instead of
    drawing them (z[0] is decoded; of the others only z_c is used); drawn here, only z_c gets K
    samples and z_s one. posterior: q(z|x) already computed for x. log_likelihood: (x, logits) ->
    log p(x|z) per image, (B,); default `model.log_likelihood` (a training aid may pass one with
    the same value and another gradient).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    L, C = model.num_labels, model.characteristic_size
    y = y.to(torch.promote_types(y.dtype, torch.float32)) if y.is_floating_point() else y.float()
    if y.shape != (x.shape[0], L):
        raise ValueError(f"labels have shape {tuple(y.shape)}, expected ({x.shape[0]}, {L})")
    log_likelihood = log_likelihood or model.log_likelihood
    q = posterior if posterior is not None else model.encode(x)
    if z is not None:
        k = z.shape[0]
    z_c, z0, log_qzc, log_qzs = _samples(q, C, k, generator, z)
    log_px = log_likelihood(x, model.decode_logits(z0))  # (B,)

    log_qy_zc = log_classifier(model, z_c, y)  # (K, B)
    log_qyx = torch.logsumexp(log_qy_zc, 0) - math.log(k)  # (B,)
    log_w = log_qy_zc - log_qyx  # (K, B), <= log K
    w = log_w.exp()

    prior = model.conditional_prior(y)  # over (B, C)
    log_pzc = prior.log_prob(z_c).sum(-1)  # (K, B)
    log_pzs = _log_standard_normal(z0[:, C:])  # (B,)
    log_py = log_label_prior(model, y)  # (B,)

    r_c = log_pzc - log_qzc - log_qy_zc  # (K, B): the part of the log-ratio that depends on z_c
    r0 = log_px + r_c[0] + log_pzs - log_qzs  # (B,): the full log-ratio at z^1
    bound = w[0] * r0 + log_qyx + log_py  # (B,)
    # same value; the score part of grad(w) from R_c over all K samples (module docstring)
    surrogate = bound - (w[0] - w[0].detach()) * r0.detach() + ((w - w.detach()) * r_c.detach()).mean(0)

    with torch.no_grad():
        pred = model.classifier_logits(q.loc[:, :C]) > 0
        terms = {
            "bound": bound.mean(),
            "reconstruction": -log_px.mean(),
            "kl": (log_qzc[0] + log_qzs - log_pzc[0] - log_pzs).mean(),
            "log_qyx": log_qyx.mean(),
            "log_py": log_py.mean(),
            "weight_mean": w[0].mean(),
            "weight_max": w[0].max(),
            "log_weight_std": log_w.std() if log_w.numel() > 1 else torch.zeros((), device=log_w.device),
            "accuracy": (pred == y.bool()).float().mean(),
            "likelihood_scale": model.likelihood_scale(),
        }
    return Objective(bound=bound, loss=-surrogate.mean(), posterior=q, z=z0, log_qyx=log_qyx, terms=terms)


def unsupervised(
    model,
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    z: torch.Tensor | None = None,
    posterior: DiagonalGaussian | None = None,
    log_likelihood: LogLikelihood | None = None,
) -> Objective:
    """The ELBO with labels marginalised exactly, for an unlabelled batch x (B, C, H, W).

        ELBO = E_q(z|x)[ log p(x|z) + log p(z_s) - log q(z|x)
                         + sum_i sum_{v in {0,1}} q(y_i=v|z_i) (log p(z_i|y_i=v) + log p(y_i=v) - log q(y_i=v|z_i)) ]

    z: optional sample (B, D) to use instead of drawing one. posterior, log_likelihood: as in `supervised`.
    """
    C = model.characteristic_size
    log_likelihood = log_likelihood or model.log_likelihood
    q = posterior if posterior is not None else model.encode(x)
    if z is None:
        z = q.sample(generator=generator)  # (B, D)
    log_px = log_likelihood(x, model.decode_logits(z))  # (B,)
    z_c = z[:, :C]
    logits = model.classifier_logits(z_c)  # (B, L)
    log_q = torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], 1)  # (B, 2, L): log q(y_i = v | z_i)
    loc, scale = model.prior_params()  # (2, C)
    log_pz = model.sum_blocks(gaussian_log_prob(upcast(z_c).unsqueeze(1), loc, scale))  # (B, 2, L): log p(z_i | y_i = v)
    pi = model.label_prior
    log_py = torch.stack([torch.log1p(-pi), pi.log()])  # (2, L)
    per_label = (log_q.exp() * (log_pz + log_py - log_q)).sum(1)  # (B, L)
    log_qz = q.log_prob(z).sum(-1)  # (B,)
    bound = log_px + _log_standard_normal(z[:, C:]) - log_qz + per_label.sum(-1)
    with torch.no_grad():
        terms = {
            "bound": bound.mean(),
            "reconstruction": -log_px.mean(),
            "label_entropy": -(log_q.exp() * log_q).sum((1, 2)).mean(),
            "likelihood_scale": model.likelihood_scale(),
        }
    return Objective(bound=bound, loss=-bound.mean(), posterior=q, z=z, terms=terms)


def partially_supervised(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 100,
    generator: torch.Generator | None = None,
    z: torch.Tensor | None = None,
    posterior: DiagonalGaussian | None = None,
    log_likelihood: LogLikelihood | None = None,
) -> Objective:
    """L(x, y_K) of the module docstring for a batch with unknown labels. x: (B, C, H, W) in [0, 1];
    y: (B, L) in {0, 1, -1 unknown}. A row with every label known gives `supervised`'s value, a row
    with none `unsupervised`'s for the same z. The gradient follows `supervised`: the score part
    of grad(w_K) uses the z_c-dependent terms R_c (the unknown labels' sums included) over all K
    samples. log_qyx is log q(y_K|x), 0 for a row with no known label. Arguments as in `supervised`.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    L, C = model.num_labels, model.characteristic_size
    if y.shape != (x.shape[0], L):
        raise ValueError(f"labels have shape {tuple(y.shape)}, expected ({x.shape[0]}, {L})")
    known = y >= 0  # (B, L)
    y = y.float().clamp_min(0)  # unknown cells become 0; every term they touch is masked below
    log_likelihood = log_likelihood or model.log_likelihood
    q = posterior if posterior is not None else model.encode(x)
    if z is not None:
        k = z.shape[0]
    z_c, z0, log_qzc, log_qzs = _samples(q, C, k, generator, z)
    log_px = log_likelihood(x, model.decode_logits(z0))  # (B,)

    logits = model.classifier_logits(z_c)  # (K, B, L)
    log_q = torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], -2)  # (K, B, 2, L): log q(y_i = v | z_i)
    loc, scale = model.prior_params()  # (2, C)
    log_pz = model.sum_blocks(gaussian_log_prob(upcast(z_c).unsqueeze(-2), loc, scale))  # (K, B, 2, L)
    pi = model.label_prior
    log_py = torch.stack([torch.log1p(-pi), pi.log()])  # (2, L): log p(y_i = v)
    v = y.long().unsqueeze(-2)  # (B, 1, L): the known value (0 where unknown)

    def pick(t: torch.Tensor) -> torch.Tensor:  # (..., 2, L) -> (..., L): the entry at v = y_i
        return t.gather(-2, v.expand(*t.shape[:-2], 1, L)).squeeze(-2)

    log_qy_zc = (pick(log_q) * known).sum(-1)  # (K, B): log q(y_K | z_c)
    log_pzk = (pick(log_pz) * known).sum(-1)  # (K, B): sum_{i in K} log p(z_i | y_i)
    log_pyk = (log_py.gather(0, v.squeeze(-2)) * known).sum(-1)  # (B,): log p(y_K)
    marginal = (log_q.exp() * (log_pz + log_py - log_q)).sum(-2)  # (K, B, L): each label's enumerated term
    log_unknown = (marginal * ~known).sum(-1)  # (K, B): sum over U

    log_qyx = torch.logsumexp(log_qy_zc, 0) - math.log(k)  # (B,): log q(y_K | x)
    log_w = log_qy_zc - log_qyx  # (K, B)
    w = log_w.exp()
    log_pzs = _log_standard_normal(z0[:, C:])  # (B,)
    r_c = log_pzk - log_qzc - log_qy_zc + log_unknown  # (K, B): the part of the log-ratio that depends on z_c
    r0 = log_px + r_c[0] + log_pzs - log_qzs  # (B,)
    bound = w[0] * r0 + log_qyx + log_pyk  # (B,)
    surrogate = bound - (w[0] - w[0].detach()) * r0.detach() + ((w - w.detach()) * r_c.detach()).mean(0)

    with torch.no_grad():
        pred = model.classifier_logits(q.loc[:, :C]) > 0
        hits = ((pred == y.bool()) & known).float().sum()
        terms = {
            "bound": bound.mean(),
            "reconstruction": -log_px.mean(),
            "log_qyx": log_qyx.mean(),
            "weight_mean": w[0].mean(),
            "accuracy": hits / known.sum().clamp_min(1),
            "known_labels": known.float().mean(),
            "likelihood_scale": model.likelihood_scale(),
        }
    return Objective(bound=bound, loss=-surrogate.mean(), posterior=q, z=z0, log_qyx=log_qyx, terms=terms)
