"""Fit a trained model's sampling prior of the style latents (the trainer's `fit_style_prior` setting).

Training pulls each q(z_s | x) towards N(0, I), yet the encoder need not fill N(0, I): the
aggregate posterior q(z_s) can be narrower or correlated, and faces generated from N(0, I) then
show the labels they were drawn for less often than the same z_c with the style of real faces.
This fits a full-covariance Gaussian to samples of q(z_s) = E_x q(z_s | x) over training faces
(`CCVAE.fit_style_prior`); generation, style resampling and the app's new faces then draw z_s from
it. Nothing the encoder, decoder or classifier compute changes: reconstructions, accuracy and
edits stay as they were.

The same setting fits each label's kinds (`CCVAE.fit_kinds`): the directions of z_s along which
labelled faces on one side of a label vary at least twice as much as on the other (a hat's colour),
which resampling a characteristic then redraws with z_i.

`python -m train.fit_prior RUN_OR_CHECKPOINT` refits both on a trained model exactly as the
trainer does at the end of its run (its train_config.json names the data, the number of faces and
the seed) and saves the model in place.
"""
from __future__ import annotations

import numpy as np
import torch

from ccvae import CCVAE, editing, hub

from . import batches

DEFAULT_FACES = 10_000


@torch.no_grad()
def encode_style(model: CCVAE, images, idx: np.ndarray, *, seed: int = 0, batch_size: int = 500) -> torch.Tensor:
    """One draw of q(z_s | x) for each of images[idx]: (len(idx), S) on the CPU, float32."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    draws = []
    for start in range(0, len(idx), batch_size):
        x = batches.to_float(batches.load(images[idx[start:start + batch_size]])).to(model.device)
        draws.append(editing.encode(model, x, sample=True, generator=g)[:, model.characteristic_size:].float().cpu())
    model.train(was_training)
    return torch.cat(draws)


def _subset(total: int, n: int, seed: int, what: str, style_dim: int) -> np.ndarray:
    if min(n, total) <= style_dim:  # (before encoding; the rest is CCVAE's to check)
        raise ValueError(f"fitting {what} over {style_dim} style latents needs more than {style_dim} faces, "
                         f"got {min(n, total)} (of {total} in the dataset)")
    return np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))


def fit_style_prior(model: CCVAE, images, *, n: int = DEFAULT_FACES, seed: int = 0, batch_size: int = 500) -> dict:
    """Fit model's style prior to one draw of q(z_s | x) for each of n faces of `images` (a random
    subset, seeded; all of them when there are fewer). Returns a summary of the fit."""
    idx = _subset(len(images), n, seed, "the style prior", model.style_dim)
    z_s = encode_style(model, images, idx, seed=seed, batch_size=batch_size)
    model.fit_style_prior(z_s.to(model.device))
    std = z_s.std(0)
    return {"faces": len(z_s), "mean_abs_loc": float(z_s.mean(0).abs().mean()),
            "std_mean": float(std.mean()), "std_min": float(std.min()), "std_max": float(std.max())}


def fit_kinds(model: CCVAE, images, labels, *, n: int = DEFAULT_FACES, seed: int = 0, batch_size: int = 500) -> dict:
    """Fit each label's kind directions (`CCVAE.fit_kinds`) to one draw of q(z_s | x) for each of
    n labelled faces (images, labels (N, L) in {0, 1}; a random subset, seeded). Returns, per
    label, the variance ratios of the directions kept."""
    idx = _subset(len(images), n, seed, "kinds", model.style_dim)
    z_s = encode_style(model, images, idx, seed=seed, batch_size=batch_size)
    y = torch.from_numpy(np.asarray(labels)[idx].astype(np.float32))
    ratios = model.fit_kinds(z_s, y)
    return {"faces": len(z_s), "ratios": dict(zip(model.label_names, ratios))}


def describe(fit: dict) -> str:
    return (f"style prior fitted to {fit['faces']} training faces: per-latent std {fit['std_mean']:.3f} on average "
            f"({fit['std_min']:.3f}..{fit['std_max']:.3f}; N(0, I) has 1), |mean| {fit['mean_abs_loc']:.3f} on average")


def describe_kinds(fit: dict) -> str:
    def sides(r):
        return "; ".join(f"{side} {', '.join(f'{v:.2g}' for v in r[k])}" for k, side in ((1, "with"), (0, "without")) if r[k])
    kept = {name: r for name, r in fit["ratios"].items() if r[0] or r[1]}
    listed = ", ".join(f"{name} ({sides(r)})" for name, r in kept.items())
    return (f"kind directions fitted to {fit['faces']} labelled faces: for {len(kept)} of {len(fit['ratios'])} labels the "
            f"faces on one side vary at least twice as much as the others along some direction of z_s (ratios): "
            f"{listed or 'none'}")


def fit_after_training(model: CCVAE, config, train_set, labelled) -> int:
    """What the trainer does once training is over (config.fit_style_prior faces, config.seed):
    fit the style prior to the training faces and the kinds to the labelled ones; prints both.
    Returns the number of faces the style prior was fitted on (fewer than asked on a small set)."""
    import sys

    fit = fit_style_prior(model, train_set.images, n=config.fit_style_prior, seed=config.seed)
    print(describe(fit), file=sys.stderr)
    if len(labelled) <= model.style_dim:
        print(f"kind directions not fitted: {len(labelled)} labelled faces, {model.style_dim} style latents", file=sys.stderr)
    else:
        print(describe_kinds(fit_kinds(model, labelled.images, labelled.labels, n=config.fit_style_prior, seed=config.seed)),
              file=sys.stderr)
    return fit["faces"]


def main(argv=None) -> int:
    import argparse
    import json
    import sys
    from pathlib import Path

    from .config import from_dict
    from .data import semi_supervised
    from .trainer import load_data

    parser = argparse.ArgumentParser(prog="python -m train.fit_prior", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a run folder, or its model/ folder (config.json, model.safetensors, "
                                                 "train_config.json)")
    args = parser.parse_args(argv)
    try:
        args.model = hub.model_dir(args.model)  # a run folder gives its model/
        settings = json.loads((args.model / "train_config.json").read_text())
        config = from_dict(settings, str(args.model / "train_config.json"), saved_run=True)
        if not config.fit_style_prior:
            raise ValueError(f"{args.model / 'train_config.json'} sets fit_style_prior to 0: nothing to fit")
        model = CCVAE.from_pretrained(args.model)
        train_set = load_data(config, "train", config.limit)
        labelled, _ = semi_supervised(train_set, config.sup_frac, seed=config.seed)
        fit_after_training(model, config, train_set, labelled)
        model.save_pretrained(args.model)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"saved {args.model}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
