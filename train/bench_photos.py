"""Time face alignment (ccvae.photos.align) of a 1024 x 1024 photo on one core.

    python -m train.bench_photos                      # astronaut.png (scikit-image) enlarged to 1024
    python -m train.bench_photos --image me.jpg --repeats 50

Prints the median wall-clock and CPU milliseconds per photo: with a face (the target is 100 ms),
and for a photo without one (every search runs: upright, turned both ways, at two resolutions).
OpenCV and torch are held to one thread.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from PIL import Image


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.bench_photos", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=None, help="a photo with a face (default: scikit-image's astronaut.png)")
    p.add_argument("--side", type=int, default=1024, help="the photo is resized to side x side pixels")
    p.add_argument("--size", type=int, default=64, help="the model's image size (the crop)")
    p.add_argument("--repeats", type=int, default=20)
    return p.parse_args(argv)


def time_align(image: Image.Image, framing: dict, *, size: int, repeats: int) -> tuple[float, float, object]:
    """(median wall ms, median CPU ms, the last result) of align(image) over `repeats` runs after one warm-up."""
    from ccvae.photos import align

    result = align(image, framing, size=size)
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        result = align(image, framing, size=size)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu), result


def main(args: argparse.Namespace) -> dict:
    import cv2
    import torch

    from ccvae.images import open_image
    from .data import framing

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if args.image is None:
        from skimage import data as skdata
        photo = Image.fromarray(skdata.astronaut())
    else:
        photo = open_image(args.image)
    photo = photo.resize((args.side, args.side), Image.Resampling.BICUBIC)
    blank = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.side, args.side, 3), dtype=np.uint8))
    f = framing("synthetic")
    out = {}
    for name, image in (("face", photo), ("no face", blank)):
        wall, cpu, result = time_align(image, f, size=args.size, repeats=args.repeats)
        out[name] = {"wall_ms": wall, "cpu_ms": cpu, "has_face": result.has_face}
        print(f"{name:8s} {args.side}x{args.side} -> {args.size}x{args.size}: {wall:6.1f} ms wall, {cpu:6.1f} ms CPU "
              f"(median of {args.repeats}, 1 thread; face found: {result.has_face})")
    return out


if __name__ == "__main__":
    sys.exit(0 if main(parse_args()) else 1)
