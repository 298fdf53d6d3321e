"""Distributions used by the model, in the few forms the objective needs.

All log-densities are summed over the event dimensions and computed in float32, so that the
objective is the same under bf16 autocast.
"""
from __future__ import annotations

import math
from typing import NamedTuple

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


def check_emphasis(power: float, name: str = "residual emphasis") -> float:
    """The emphasis power if it is a finite number >= 0; otherwise a ValueError that says `name`
    (the CLIs pass their flag)."""
    if not (power >= 0 and math.isfinite(power)):
        raise ValueError(f"{name} must be a finite power >= 0, got {power}")
    return power


EMPHASIS_FLOOR = 0.01  # the default eps in r^2 = sum_c (x - mean)^2 + eps^2 (a bare power uses it)


class Emphasis(NamedTuple):
    """Residual emphasis with a floor: `emphasise_residuals` takes this or a bare power."""
    power: float
    floor: float = EMPHASIS_FLOOR


def check_floor(floor: float, name: str = "residual emphasis floor") -> float:
    """The floor if it is a finite number > 0; otherwise a ValueError that says `name`."""
    if not (floor > 0 and math.isfinite(floor)):
        raise ValueError(f"{name} must be a finite number > 0, got {floor}")
    return floor


def emphasise_residuals(x: torch.Tensor, logits: torch.Tensor, emphasis: float | Emphasis) -> torch.Tensor:
    """The logits unchanged in value, with each pixel's gradient scaled by how wrong it is.

    emphasis: a power P, or Emphasis(P, floor eps). w_p = r_p^P / mean_p(r_p^P) per image, with
    r_p^2 = sum_c (x - sigmoid(logits))^2 + eps^2 (detached; eps = 0.01 for a bare power). A larger
    eps keeps more of the pull on the pixels that are already nearly right (w_p >= eps^P / mean).
    The result is logits.detach() + w * (logits - logits.detach()): every value a
    likelihood computes from it is the same, and d/d logits_p is multiplied by w_p. With power 1 a
    Gaussian likelihood's pull on a pixel grows as r_p^2 instead of r_p, so the few pixels the
    decoder gets most wrong (small details such as the synthetic faces' earrings, 1.6 % of a face and
    a quarter of its squared error) are learned sooner; the weights average 1 over each image.
    Nothing else changes: the scale, the KL and the bound see the plain values. P = 0: the logits.
    x, logits: (B, C, H, W); returns (B, C, H, W).
    """
    power, floor = emphasis if isinstance(emphasis, Emphasis) else Emphasis(emphasis)
    if check_emphasis(power) == 0:
        return logits
    check_floor(floor)
    with torch.no_grad():
        r2 = (x - torch.sigmoid(logits)).square().sum(1, keepdim=True).add_(floor * floor)  # (B, 1, H, W)
        w = r2.pow_(power / 2)
        w = w / w.mean((2, 3), keepdim=True)
    detached = logits.detach()
    return detached + w * (logits - detached)


def image_log_likelihood(x: torch.Tensor, logits: torch.Tensor, kind: str, scale: torch.Tensor, *,
                         emphasis: float | Emphasis = 0.0) -> torch.Tensor:
    """log p(x | z) summed over pixels: (B,).

    x: (B, C, H, W) in [0, 1]. logits: decoder output before the sigmoid, (B, C, H, W); the
    image mean is sigmoid(logits). scale: scalar tensor (ignored for "bernoulli").
      laplace:   log p = -|x - mu| / s - log(2 s)
      gaussian:  log p = -(x - mu)^2 / (2 s^2) - log s - log(2 pi) / 2
      bernoulli: log p = x log mu + (1 - x) log(1 - mu), from the logits for stability
    emphasis: the same value, with the logits' gradient reweighted per pixel
    (`emphasise_residuals`; 0 = the plain gradient).
    """
    logits = upcast(logits)
    x = x.to(logits.dtype)
    logits = emphasise_residuals(x, logits, emphasis)
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
