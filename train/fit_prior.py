"""Fit a trained model's sampling prior of the style latents (the trainer's `fit_style_prior` setting).

Training pulls each q(z_s | x) towards N(0, I), yet the encoder need not fill N(0, I): the
aggregate posterior q(z_s) can be narrower or correlated, and faces generated from N(0, I) then
show the labels they were drawn for less often than the same z_c with the style of real faces.
This fits a full-covariance Gaussian to samples of q(z_s) = E_x q(z_s | x) over training faces
(`CCVAE.fit_style_prior`); generation, style resampling and the app's new faces then draw z_s from
it. Nothing the encoder, decoder or classifier compute changes: reconstructions, accuracy and
edits stay as they were.
"""
from __future__ import annotations

import numpy as np
import torch

from ccvae import CCVAE, editing

from . import batches

DEFAULT_FACES = 10_000


@torch.no_grad()
def fit_style_prior(model: CCVAE, images, *, n: int = DEFAULT_FACES, seed: int = 0, batch_size: int = 500) -> dict:
    """Fit model's style prior to one draw of q(z_s | x) for each of n faces of `images` (a random
    subset, seeded; all of them when there are fewer). Returns a summary of the fit."""
    total = len(images)
    if min(n, total) <= model.style_dim:  # (before encoding; the rest is CCVAE.fit_style_prior's to check)
        raise ValueError(f"fitting {model.style_dim} style latents needs more than {model.style_dim} faces, "
                         f"got {min(n, total)} (of {total} in the dataset)")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False))
    g = torch.Generator(device=model.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    draws = []
    for start in range(0, len(idx), batch_size):
        x = batches.to_float(batches.load(images[idx[start:start + batch_size]])).to(model.device)
        draws.append(editing.encode(model, x, sample=True, generator=g)[:, model.characteristic_size:].float().cpu())
    model.train(was_training)
    z_s = torch.cat(draws)
    model.fit_style_prior(z_s.to(model.device))
    std = z_s.std(0)
    return {"faces": len(z_s), "mean_abs_loc": float(z_s.mean(0).abs().mean()),
            "std_mean": float(std.mean()), "std_min": float(std.min()), "std_max": float(std.max())}


def describe(fit: dict) -> str:
    return (f"style prior fitted to {fit['faces']} training faces: per-latent std {fit['std_mean']:.3f} on average "
            f"({fit['std_min']:.3f}..{fit['std_max']:.3f}; N(0, I) has 1), |mean| {fit['mean_abs_loc']:.3f} on average")
