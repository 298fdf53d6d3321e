"""The CCVAE objective: the supervised bound (paper Eq. 1) and the unsupervised ELBO.

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
        k = z.shape[0]
        z_c, z0 = z[..., :C], z[0]  # (K, B, C), (B, D)
        log_qzc = gaussian_log_prob(z_c, loc_c, scale_c).sum(-1)  # (K, B)
        log_qzs = gaussian_log_prob(z0[:, C:], loc_s, scale_s).sum(-1)  # (B,)
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
