"""Baselines without a VAE: a classifier of the encoder's shape trained on the labelled images alone,
and the majority guess.

    python -m paper.labels_only --recipe synthetic-faces --sup-frac 0.004 --seed 0 --steps 2337 --out runs/lo

The classifier is common.LabelClassifier (CCVAE's encoder trunk, one linear head per label, dropout
DROPOUT before the heads), trained by BCE with AdamW (weight decay WEIGHT_DECAY) for a fixed number of
steps on cycled labelled batches, the rate following train.trainer.lr_at's cosine over the steps.
Each training image is moved by up to SHIFT pixels and mirrored left-right with probability 1/2
(`augment`). Every label of the synthetic faces survives a flip, as CelebA's attributes do
(train/data/synthetic.py draws eyes, glasses, earrings, hair and tie symmetrically about the face's
axis; parting, pose and light change side but come from symmetric ranges; only a cap's peak, always
on the image's right, makes a flipped face new, and it is still a hat). No early stopping: with 200
labelled faces a practitioner has no 2,000 labelled validation faces. The settings are the same at every f.
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from train import batches
from train.config import TrainConfig
from train.trainer import lr_at

from .common import (LabelClassifier, base_parser, channels_of, labels_tensor, run_cli, semi_supervised_data,
                     steps_per_epoch, test_metrics, write_run)

WEIGHT_DECAY = 0.05  # AdamW's decoupled decay, per unit of learning rate
DROPOUT = 0.5  # on the trunk's features, before the linear heads
SHIFT = 3  # pixels: the largest random move of a training image (the faces' own position varies by ~2)


def augment(x: torch.Tensor, *, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x (B, C, H, W) with each image mirrored left-right with probability 1/2, then moved by (dy, dx),
    each uniform in {-max_shift, .., max_shift}, its edge pixels repeated into the uncovered border."""
    B, _, H, W = x.shape
    dev = x.device if generator is None else generator.device
    flip = (torch.rand(B, generator=generator, device=dev) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if max_shift == 0:
        return x
    s = max_shift
    dy, dx = (torch.randint(-s, s + 1, (2, B), generator=generator, device=dev) + s).to(x.device)
    rows = torch.arange(H, device=x.device) + dy[:, None]  # (B, H) into the padded image
    cols = torch.arange(W, device=x.device) + dx[:, None]  # (B, W)
    padded = F.pad(x, (s, s, s, s), mode="replicate")  # (B, C, H + 2s, W + 2s)
    out = padded[torch.arange(B, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def fit_labels_only(config: TrainConfig, images: np.ndarray, labels: np.ndarray, *, steps: int,
                    device: torch.device, progress: bool = True, dropout: float = DROPOUT, max_shift: int = SHIFT,
                    weight_decay: float = WEIGHT_DECAY) -> LabelClassifier:
    """A LabelClassifier trained for `steps` AdamW steps on (images (N, H, W, 3) uint8, labels (N, L) in {0, 1}):

        loss = mean over the batch and labels of BCE(a(augment(x)), y)

    on batches.cycled_batch(N, config.batch_size, config.seed, t), t = 0 .. steps - 1. The baseline
    uses the defaults; the others exist for tests.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    torch.manual_seed(config.seed)
    model = LabelClassifier(num_labels=labels.shape[1], image_size=config.image_size, channels=channels_of(config),
                            hidden_dim=config.hidden_dim, dropout=dropout)
    model.to(device).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed * 7919)
    x_all = batches.resident(images, device)
    y_all = labels_tensor(labels, x_all.device)
    for t in tqdm(range(steps), desc="labels only", disable=not progress, leave=False):
        idx = batches.cycled_batch(len(x_all), config.batch_size, config.seed, t)
        x = batches.batch_to_device(x_all, idx, device, channels_last=True)
        x = augment(x, max_shift=max_shift, generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(x), y_all[idx.to(y_all.device)].to(device))
        if not torch.isfinite(loss):
            raise RuntimeError(f"the labels-only loss became {loss.item()} at step {t + 1}; try a lower lr")
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, config.epochs * t / steps)  # the trainer's cosine, over the steps
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def train_labels_only(config: TrainConfig, *, steps: int, out: Path | None = None,
                      device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Fit the classifier on the run's labelled images (fit_labels_only) and return its test metrics;
    `epochs` is the steps in CCVAE epochs of this f. Writes metrics.json, weights and settings to `out`."""
    device = torch.device(device)
    train_set, labelled, unlabelled = semi_supervised_data(config)
    start = time.time()
    model = fit_labels_only(config, labelled.images, labelled.labels, steps=steps, device=device, progress=progress)
    seconds = time.time() - start
    metrics = test_metrics(config, lambda x: model(x) > 0, device=device, label_names=train_set.label_names,
                           train_seconds=round(seconds, 1), labelled=len(labelled), unlabelled=len(unlabelled),
                           epochs=steps / steps_per_epoch(config, labelled, unlabelled), steps=steps,
                           method="labels only", weight_decay=WEIGHT_DECAY, dropout=DROPOUT, shift=SHIFT)
    if out is not None:
        model_config = dict(num_labels=len(train_set.label_names), image_size=config.image_size,
                            channels=channels_of(config), hidden_dim=config.hidden_dim, dropout=DROPOUT,
                            label_names=list(train_set.label_names))
        write_run(Path(out), metrics=metrics, config=config, model=model, model_config=model_config)
    return metrics


def majority_labels(labels: np.ndarray) -> np.ndarray:
    """Each label's most frequent value (L,) in {0, 1} among labels (N, L) in {0, 1, -1 = unknown}; a tie gives 0."""
    labels = np.asarray(labels)
    ones, known = (labels == 1).sum(0), (labels >= 0).sum(0)
    return (2 * ones > known).astype(np.int8)


def majority_metrics(config: TrainConfig, *, device: str | torch.device = "cpu") -> dict:
    """The majority guess: every test image gets each label's most frequent value in the labelled set."""
    device = torch.device(device)
    train_set, labelled, unlabelled = semi_supervised_data(config)
    guess = torch.from_numpy(majority_labels(labelled.labels)).bool().to(device)
    return test_metrics(config, lambda x: guess.expand(x.shape[0], -1), device=device,
                        label_names=train_set.label_names, train_seconds=0.0, labelled=len(labelled),
                        unlabelled=len(unlabelled), epochs=0, steps=0, method="majority",
                        majority=dict(zip(train_set.label_names, map(int, guess.tolist()))))


def parse_args(argv=None) -> argparse.Namespace:
    p = base_parser("python -m paper.labels_only", __doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, required=True,
                   help="optimizer steps (the table passes CCVAE's: epochs x ceil(unlabelled / batch size))")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_cli(args, functools.partial(train_labels_only, steps=args.steps))


if __name__ == "__main__":
    sys.exit(main())
