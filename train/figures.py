"""Figures drawn with ccvae.editing: reconstructions, traversals, diversity.

Every figure is a PIL image assembled from decoded tiles, with label names written beside the
rows, so the same code serves per-epoch progress, model cards and the README.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ccvae import editing

GAP = 2


def _tiles(x: torch.Tensor) -> np.ndarray:
    """(..., C, H, W) in [0, 1] -> uint8 (..., H, W, C)."""
    return (x.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).movedim(-3, -1).cpu().numpy()


def grid(rows: torch.Tensor, row_names: list[str] | None = None, *, scale: int = 1, label_width: int = 120) -> Image.Image:
    """rows: (R, N, C, H, W) images -> a grid image, each row named on the left."""
    t = _tiles(rows)
    R, N, H, W, _ = t.shape
    left = label_width if row_names else 0
    canvas = np.full((R * (H + GAP) + GAP, left + N * (W + GAP) + GAP, 3), 255, np.uint8)
    for r in range(R):
        for n in range(N):
            y0, x0 = GAP + r * (H + GAP), left + GAP + n * (W + GAP)
            canvas[y0:y0 + H, x0:x0 + W] = t[r, n]
    img = Image.fromarray(canvas)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    if row_names:
        draw = ImageDraw.Draw(img)
        for r, name in enumerate(row_names):
            draw.text((4, (GAP + r * (H + GAP) + H // 2 - 5) * scale), name, fill=(0, 0, 0))
    return img


@torch.no_grad()
def reconstruction_figure(model, x: torch.Tensor) -> Image.Image:
    """Inputs above their reconstructions (posterior mean)."""
    return grid(torch.stack([x, editing.reconstruct(model, x)]), ["input", "reconstruction"], scale=2, label_width=60)


@torch.no_grad()
def traversal_figure(model, x: torch.Tensor, *, steps: int = 8) -> Image.Image:
    """For each face in x: one row per label walking its own traversal range, absent -> present."""
    z = editing.encode(model, x)
    rows, names = [], []
    for b in range(z.shape[0]):
        for i, name in enumerate(model.label_names):
            rows.append(editing.decode(model, editing.traverse(model, z[b:b + 1], i, steps=steps)[0]))
            names.append(f"{name}" if b == 0 else f"{name} ")
    return grid(torch.stack(rows), names)


@torch.no_grad()
def diversity_figure(model, x: torch.Tensor, labels: list[int | str], *, n: int = 8, seed: int = 0) -> Image.Image:
    """One face (x[:1]); for each label, its reconstruction then n resamples of z_i ~ p(z_i | y_i = 1)."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    z = editing.encode(model, x[:1])
    rows, names = [], []
    for label in labels:
        i = model.label_index(label)
        many = editing.resample_latent(model, z.expand(n, -1), i, present=True, generator=g)
        rows.append(editing.decode(model, torch.cat([z, many])))
        names.append(f"{model.label_names[i]} x{n}")
    return grid(torch.stack(rows), names)


def epoch_figures(model, faces: torch.Tensor, directory: Path, epoch: int) -> None:
    """recon, traversal (every label) and diversity PNGs for one epoch."""
    directory.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    reconstruction_figure(model, faces).save(directory / f"epoch{epoch:03d}_reconstruction.png")
    traversal_figure(model, faces[:1]).save(directory / f"epoch{epoch:03d}_traversal.png")
    diversity_figure(model, faces[:1], list(range(model.num_labels))).save(directory / f"epoch{epoch:03d}_diversity.png")
    model.train(was_training)
