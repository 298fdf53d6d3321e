"""Look at a dataset, count its labels, or time the synthetic renderer.

    python -m train.data preview synthetic --n 64 --out grid.png
    python -m train.data preview celeba --root DIR --out grid.png
    python -m train.data preview folder --root DIR --labels FILE.csv --out grid.png
    python -m train.data preview folder --root DIR --labels FILE.csv --align celeba --out grid.png
    python -m train.data stats synthetic --split test
    python -m train.data bench synthetic --n 5000
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from . import ALIGN_CHOICES, DATASET_NAMES, load_dataset
from .labels import label_list


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("preview", "a grid of samples with their labels"), ("stats", "size and label frequencies"),
                        ("bench", "images per second of the synthetic renderer")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("dataset", choices=DATASET_NAMES)
        s.add_argument("--root", default=None, help="celeba: the CelebA folder; folder: the image folder")
        s.add_argument("--labels", default=None, help="folder: the CSV of labels")
        s.add_argument("--label-names", nargs="+", default=None,
                       help="labels to use, e.g. Smiling,Eyeglasses (commas or spaces, as python -m train takes them; "
                            "default: all / the paper's 18)")
        s.add_argument("--split", default=None, help="train / val / test (folder: also all); default train (folder: all)")
        s.add_argument("--image-size", type=int, default=64)
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--center-crop", action="store_true")
        s.add_argument("--align", choices=ALIGN_CHOICES, default=None,
                       help="folder: find each photo's face and align its eyes to this dataset's framing")
        s.add_argument("--cache-dir", default=None)
        s.add_argument("--n", type=int, default={"preview": 64, "stats": None, "bench": 5000}[name],
                       help="number of images" + (" (default: the whole split)" if name == "stats" else ""))
        if name == "preview":
            s.add_argument("--out", type=Path, default=Path("grid.png"))
            s.add_argument("--scale", type=int, default=2, help="upscale each image by this factor")
        if name == "bench":
            s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def _load(args, limit):
    split = args.split or ("all" if args.dataset == "folder" else "train")
    names = label_list(args.label_names)
    kwargs = dict(root=args.root, labels_csv=args.labels, center_crop=args.center_crop) if args.dataset != "synthetic" else {}
    if args.align is not None:
        kwargs["align"] = args.align
    return load_dataset(args.dataset, split, label_names=names, image_size=args.image_size, seed=args.seed,
                        limit=limit, cache_dir=args.cache_dir, **kwargs)


def preview(args) -> Path:
    from PIL import Image, ImageDraw, ImageFont

    ds = _load(args, args.n if args.dataset == "synthetic" else None)
    n = min(args.n, len(ds))
    if n == 0:
        raise SystemExit(f"{ds.name} is empty: nothing to preview")
    images, labels = ds.take(np.arange(n))
    side = ds.image_size * args.scale
    font = ImageFont.load_default()
    lines = 6
    cell_h = side + 11 * lines + 4
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = Image.new("RGB", (cols * (side + 4), rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    width = max(8, side // 6)
    for k in range(n):
        x0, y0 = (k % cols) * (side + 4), (k // cols) * cell_h
        grid.paste(Image.fromarray(images[k]).resize((side, side), Image.NEAREST), (x0, y0))
        if labels is None:
            text = "(unlabelled)"
        else:
            text = " ".join(n if v == 1 else f"{n}?" for n, v in zip(ds.label_names, labels[k]) if v != 0) or "(none)"
        for i, line in enumerate(textwrap.wrap(text, width)[:lines]):
            draw.text((x0 + 2, y0 + side + 2 + 11 * i), line, fill=(0, 0, 0), font=font)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}: {n} images of {ds.name} with their labels ('X?' = unknown)")
    return args.out


def stats(args) -> dict:
    ds = _load(args, args.n)
    print(f"{ds.name}: {len(ds)} images, {ds.image_size}x{ds.image_size}, {len(ds.label_names)} labels")
    if ds.skipped:
        print(f"  {len(ds.skipped)} unreadable images skipped")
    freq = {}
    for j, name in enumerate(ds.label_names):
        col = ds.labels[:, j]
        known = (col >= 0).sum()
        freq[name] = float((col == 1).sum() / max(known, 1))
        unknown = f"  ({len(col) - known} unknown)" if known < len(col) else ""
        print(f"  {name:<22} {freq[name]:6.3f}{unknown}")
    return freq


def bench(args) -> dict:
    from .synthetic import SPLITS, render_range

    if args.dataset != "synthetic":
        raise SystemExit("bench times the synthetic renderer: python -m train.data bench synthetic --n 5000")
    split = args.split or "train"
    if split not in SPLITS:
        raise SystemExit(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    render_range(args.seed, split, 0, 20, args.image_size)  # warm up
    t = time.perf_counter()
    _, cpu = _render_timed(args.seed, split, 0, args.n, args.image_size)
    one = args.n / (time.perf_counter() - t)
    print(f"1 core : {one:8.0f} images/s ({args.image_size}x{args.image_size}, {args.n} images)")
    result = {"one_core": one, "one_core_cpu": args.n / cpu}
    if args.workers > 1:
        import multiprocessing as mp

        # By its module name: run as `python -m train.data`, this module is __main__, which the
        # spawned workers cannot unpickle functions from.
        from .__main__ import _render_timed as timed
        chunk = max(1, args.n // (4 * args.workers))
        jobs = [(args.seed, split, a, min(a + chunk, args.n), args.image_size) for a in range(0, args.n, chunk)]
        with mp.get_context("spawn").Pool(args.workers) as pool:
            pool.starmap(render_range, [(args.seed, split, 0, 2, args.image_size)] * args.workers)  # start workers
            t = time.perf_counter()
            cpu = sum(c for _, c in pool.starmap(timed, jobs))
            all_ = args.n / (time.perf_counter() - t)
        print(f"{args.workers} cores: {all_:8.0f} images/s")
        result.update(all_cores=all_, all_cores_cpu=args.n / cpu)
    # Wall-clock rates drop when other processes share the cores; the CPU time of the rendering
    # processes (time.process_time) changes much less, so these compare across busy and idle machines.
    print(f"CPU time: {result['one_core_cpu']:8.0f} images per CPU-second on 1 core"
          + (f", {result['all_cores_cpu']:.0f} per CPU-second with {args.workers} workers" if args.workers > 1 else ""))
    return result


def _render_timed(seed, split, start, stop, size):
    """render_range(...) and the CPU seconds this process spent on it."""
    from .synthetic import render_range

    cpu = time.process_time()
    out = render_range(seed, split, start, stop, size)
    return out, time.process_time() - cpu


def main(args: argparse.Namespace):
    return {"preview": preview, "stats": stats, "bench": bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(0 if main(parse_args()) is not None else 1)
