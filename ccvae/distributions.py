"""Distributions used by the model, in the few forms the objective needs.

All log-densities are summed over the event dimensions and computed in float32, so that the
objective is the same under bf16 autocast.
"""
from __future__ import annotations

import math
import torch
import torch.nn.functional as F

LIKELIHOODS = ("laplace", "gaussian", "bernoulli")
_LOG_2PI = math.log(2 * math.pi)


class DiagonalGaussian:
    """N(loc, diag(scale^2)) over the last dimension. loc, scale: (..., D)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        self.loc = loc
        self.scale = scale

    def mode(self) -> torch.Tensor:
        return self.loc

    def sample(self, num_samples: int | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample: (..., D), or (num_samples, ..., D) when num_samples is given."""
        shape = self.loc.shape if num_samples is None else (num_samples, *self.loc.shape)
        eps = torch.randn(shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + self.scale * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Elementwise log N(z; loc, scale), NOT summed: (..., D)."""
        return gaussian_log_prob(z, self.loc, self.scale)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) per dimension: (..., D)."""
        var = self.scale.square()
        return 0.5 * (var + self.loc.square() - 1.0 - torch.log(var))


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors (under bf16 autocast), otherwise unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def gaussian_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; loc, scale^2)."""
    return -0.5 * ((x - loc) / scale).square() - torch.log(scale) - 0.5 * _LOG_2PI


def image_log_likelihood(x: torch.Tensor, logits: torch.Tensor, kind: str, scale: torch.Tensor) -> torch.Tensor:
    """log p(x | z) summed over pixels: (B,).

    x: (B, C, H, W) in [0, 1]. logits: decoder output before the sigmoid, (B, C, H, W); the
    image mean is sigmoid(logits). scale: scalar tensor (ignored for "bernoulli").
      laplace:   log p = -|x - mu| / s - log(2 s)
      gaussian:  log p = -(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2
      bernoulli: log p = x log mu + (1 - x) log(1 - mu), from the logits for stability
    """
    logits = upcast(logits)
    x = x.to(logits.dtype)
    if kind == "bernoulli":
        lp = -F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        mu = torch.sigmoid(logits)
        s = scale.to(logits.dtype)
        if kind == "laplace":
            lp = -(x - mu).abs() / s - torch.log(2 * s)
        elif kind == "gaussian":
            lp = gaussian_log_prob(x, mu, s)
        else:
            raise ValueError(f"unknown likelihood {kind!r}; expected one of {LIKELIHOODS}")
    return lp.flatten(1).sum(1)
