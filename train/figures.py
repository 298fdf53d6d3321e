"""Figures drawn with ccvae.editing: reconstructions, traversals, diversity.

Every figure is a PIL image assembled from decoded tiles, with label names written beside the
rows, so the same code serves per-epoch progress, model cards and the README.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from ccvae import editing

GAP = 2


def grid(rows: torch.Tensor, row_names: list[str] | None = None, *, scale: int = 1, label_width: int = 120) -> Image.Image:
    """rows: (R, N, C, H, W) images in [0, 1] -> a grid image on white, each row named on the left."""
    R, N = rows.shape[:2]
    sheet = make_grid(rows.detach().float().clamp(0, 1).flatten(0, 1).cpu(), nrow=N, padding=GAP, pad_value=1.0)
    img = to_pil_image(sheet)
    if row_names:
        named = Image.new("RGB", (label_width + img.width, img.height), (255, 255, 255))
        named.paste(img, (label_width, 0))
        img = named
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.LANCZOS)
    if row_names:
        draw = ImageDraw.Draw(img)
        H = rows.shape[-2]
        for r, name in enumerate(row_names):
            draw.text((4, (GAP + r * (H + GAP) + H // 2 - 5) * scale), name, fill=(0, 0, 0))
    return img


@torch.no_grad()
def reconstruction_figure(model, x: torch.Tensor) -> Image.Image:
    """Inputs above their reconstructions (posterior mean)."""
    return grid(torch.stack([x, editing.reconstruct(model, x)]), ["input", "reconstruction"], scale=2, label_width=60)


@torch.no_grad()
def traversal_figure(model, x: torch.Tensor, *, steps: int = 8, scale: int = 1) -> Image.Image:
    """For each face in x: one row per label walking its own traversal range, absent -> present,
    as the label's slider in the app moves it: the labels exclusive with it cleared where it
    reads present (`editing.traverse(as_edits=True)`; a plain walk would draw black and blond hair at
    once on a black-haired face)."""
    z = editing.encode(model, x)
    rows, names = [], []
    for b in range(z.shape[0]):
        for i, name in enumerate(model.label_names):
            walk = editing.traverse(model, z[b:b + 1], i, steps=steps, as_edits=True)[0]
            rows.append(editing.decode(model, walk))
            names.append(f"{name}" if b == 0 else f"{name} ")
    return grid(torch.stack(rows), names, scale=scale)


@torch.no_grad()
def diversity_figure(model, x: torch.Tensor, labels: list[int | str], *, n: int = 8, seed: int = 0,
                     scale: int = 1) -> Image.Image:
    """For each face of x and each label, a row: the face's reconstruction, then n resamples of the
    whole z_i ~ p(z_i | y_i = 1) on the classifier's side (the labels exclusive with it cleared, as
    the app's Add button clears them)."""
    g = torch.Generator(device=model.device).manual_seed(seed)
    rows, names = [], []
    for f, z in enumerate(editing.encode(model, x).split(1)):
        for label in labels:
            i = model.label_index(label)
            many = editing.resample_latent(model, z.expand(n, -1), i, present=True, generator=g, as_edits=True)
            rows.append(editing.decode(model, torch.cat([z, many])))
            names.append(f"{model.label_names[i]} x{n}" if len(x) == 1 else f"face {f + 1}: {model.label_names[i]} x{n}")
    return grid(torch.stack(rows), names, scale=scale)


def epoch_figures(model, faces: torch.Tensor, directory: Path, epoch: int) -> None:
    """recon, traversal (every label) and diversity PNGs for one epoch."""
    directory.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    reconstruction_figure(model, faces).save(directory / f"epoch{epoch:03d}_reconstruction.png")
    traversal_figure(model, faces[:1]).save(directory / f"epoch{epoch:03d}_traversal.png")
    diversity_figure(model, faces[:1], list(range(model.num_labels))).save(directory / f"epoch{epoch:03d}_diversity.png")
    model.train(was_training)


def parse_args(argv=None):
    import argparse

    p = argparse.ArgumentParser(prog="python -m train.figures",
                                description="Draw the README figures of a model on held-out faces, and export example faces for the app.")
    p.add_argument("checkpoint", help="model folder or Hub id")
    p.add_argument("--out", type=Path, required=True, help="folder for traversal.png, diversity.png, reconstructions.png")
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "celeba", "folder"])
    p.add_argument("--root", type=Path)
    p.add_argument("--labels", type=Path, dest="labels_csv")
    p.add_argument("--diversity-labels", nargs="+", default=["Eyeglasses", "Wearing_Hat", "Wearing_Earrings", "Smiling"],
                   help="characteristics to resample in the diversity figure (the two faces are chosen to have the first)")
    p.add_argument("--examples", type=int, default=0, help="also write this many held-out faces to CHECKPOINT/examples/")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(args) -> None:
    import numpy as np

    from ccvae import CCVAE

    from . import batches
    from .data import load_dataset

    model = CCVAE.from_pretrained(args.checkpoint).eval()
    test = load_dataset(args.dataset, "test", root=args.root, labels_csv=args.labels_csv,
                        label_names=model.label_names, image_size=model.image_size, limit=2000)
    x = batches.to_float(batches.load(test.images[:8]))
    args.out.mkdir(parents=True, exist_ok=True)
    reconstruction_figure(model, x).save(args.out / "reconstructions.png")
    traversal_figure(model, x[:2]).save(args.out / "traversal.png")
    first = model.label_index(args.diversity_labels[0])
    having = np.flatnonzero(np.asarray(test.labels)[:, first] == 1)
    faces = batches.to_float(batches.load(test.images[having[:2]])) if len(having) >= 2 else x[:2]
    diversity_figure(model, faces, args.diversity_labels, seed=args.seed, scale=2).save(args.out / "diversity.png")
    print(f"wrote reconstructions.png, traversal.png, diversity.png to {args.out}")
    if args.examples:
        folder = Path(args.checkpoint) / "examples"
        folder.mkdir(exist_ok=True)
        for i in range(args.examples):
            Image.fromarray(np.asarray(test.images[i])).save(folder / f"test{i:03d}.png")
        print(f"wrote {args.examples} held-out faces to {folder}")


if __name__ == "__main__":
    main(parse_args())
