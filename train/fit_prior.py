"""Fit a trained model's sampling prior of the style latents: `python -m train.fit_prior CHECKPOINT`.

Training pulls each q(z_s | x) towards N(0, I), yet the encoder need not fill N(0, I): on v26 (README)
the aggregate posterior q(z_s) had a standard deviation of 0.72, and faces generated from N(0, I)
showed the labels they were drawn for less often (conditional accuracy 0.875) than the same
z_c with the style of real faces (0.930). This fits a full-covariance Gaussian to samples of
q(z_s) = E_x q(z_s | x) over training faces (`CCVAE.fit_style_prior`); generation, style resampling
and the app's new faces then draw z_s from it. Nothing the encoder, decoder or classifier compute
changes: reconstructions, accuracy and edits stay as they were.

The model folder is written in place (or to --out): config.json (fitted_style_prior: true) and
model.safetensors (style_prior_loc, style_prior_tril), then, unless --no-eval, the model is
evaluated as `train.evaluate` does and metrics.json and the model card's evaluation are replaced.
The trainer does the same at the end of a run with `--fit-style-prior N`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ccvae import CCVAE, CheckpointError, editing
from ccvae.device import default_device

from . import batches
from .modelcard import STYLE_PRIOR_SECTION, command_line, metrics_table, replace_evaluation

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
        draws.append(editing.encode(model, x, sample=True, generator=g)[:, model.num_labels:].float().cpu())
    model.train(was_training)
    z_s = torch.cat(draws)
    model.fit_style_prior(z_s.to(model.device))
    std = z_s.std(0)
    return {"faces": len(z_s), "mean_abs_loc": float(z_s.mean(0).abs().mean()),
            "std_mean": float(std.mean()), "std_min": float(std.min()), "std_max": float(std.max())}


def describe(fit: dict) -> str:
    return (f"style prior fitted to {fit['faces']} training faces: per-latent std {fit['std_mean']:.3f} on average "
            f"({fit['std_min']:.3f}..{fit['std_max']:.3f}; N(0, I) has 1), |mean| {fit['mean_abs_loc']:.3f} on average")


def card_section(fit: dict, command: str) -> str:
    """The model card's section on the fitted style prior."""
    return ("## Style prior\n\n"
            f"Generation draws the style latents from a Gaussian fitted to the aggregate posterior, not N(0, I) "
            f"(`CCVAE.fit_style_prior`): {describe(fit)}.\n\n```\n{command}\n```\n")


def update_card(card: str, *, section: str, table: str | None) -> str:
    """card (a model card's text) with its style-prior section replaced (or added) and, when `table`
    is given, its evaluation table replaced; with table None, the evaluation is marked stale."""
    card = STYLE_PRIOR_SECTION.sub("\n", card).rstrip("\n") + "\n\n" + section
    return replace_evaluation(card, table if table is not None else (
        "Not evaluated since the style prior was fitted: run `python -m train.evaluate` on this folder "
        "with `--update`."))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.fit_prior", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="model folder")
    p.add_argument("--out", type=Path, help="write the fitted model here (default: in place)")
    p.add_argument("--n", type=int, default=DEFAULT_FACES,
                   help="fit on the first N faces of the training split (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which faces, and the draws of q(z_s | x)")
    p.add_argument("--dataset", choices=["synthetic", "celeba", "folder"], default="synthetic")
    p.add_argument("--root", type=Path)
    p.add_argument("--labels", type=Path, dest="labels_csv")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--no-eval", action="store_true", help="do not evaluate the fitted model")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only (default: all)")
    p.add_argument("--n-oracle", type=int, default=500, help="test images judged by the oracle (default: %(default)s)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    from ccvae import hub

    from .data import load_dataset
    from .evaluate import evaluate, format_table

    out = args.out or args.checkpoint
    try:
        if not args.checkpoint.is_dir():
            raise FileNotFoundError(f"{args.checkpoint} is not a model folder")
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} exists and is not a folder")
        model = CCVAE.from_pretrained(args.checkpoint).to(default_device(args.device))
        if args.n < 1:
            raise ValueError(f"--n must be a positive number of training faces, got {args.n}")
        train = load_dataset(args.dataset, "train", root=args.root, labels_csv=args.labels_csv,
                             label_names=model.label_names, image_size=model.image_size, seed=args.data_seed,
                             limit=args.n)
        fit = fit_style_prior(model, train.images, n=args.n, seed=args.seed)
        print(describe(fit), file=sys.stderr)
        metrics = None if args.no_eval else evaluate(model, args.dataset, root=args.root, labels_csv=args.labels_csv,
                                                     image_size=model.image_size, data_seed=args.data_seed,
                                                     limit=args.eval_limit, n_oracle=args.n_oracle)
    except (CheckpointError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if out.resolve() != args.checkpoint.resolve():
        out.mkdir(parents=True, exist_ok=True)
        for f in args.checkpoint.iterdir():  # the card, the figures; the weights are written below
            if f.is_file() and f.name not in (hub.CONFIG_NAME, hub.WEIGHTS_NAME, "metrics.json"):
                shutil.copy2(f, out / f.name)
    hub.save(model, out)
    command = command_line({k: v for k, v in vars(args).items() if k != "checkpoint"},
                           prog=f"python -m train.fit_prior {args.checkpoint}")
    card_file = out / "README.md"
    if card_file.is_file():
        card_file.write_text(update_card(card_file.read_text(), section=card_section(fit, command),
                                         table=metrics_table(metrics) if metrics else None))
    if metrics is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(format_table(metrics))
    else:
        (out / "metrics.json").unlink(missing_ok=True)  # it described the model before the fit
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
