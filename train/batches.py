"""Batches from uint8 image arrays: the one path from a dataset to model-ready tensors.

Images are stored as uint8 (N, H, W, 3). On a GPU the whole array is moved to the device once
when it fits, so a batch is an on-device gather; on the CPU it is read into memory once.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import numpy as np
import torch


def load(images: np.ndarray) -> torch.Tensor:
    """uint8 images (a memmap or any array) as a torch tensor in memory (a copy: memmaps are read-only)."""
    return torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))


def to_float(images: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [0, 1], on the same device."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def resident(images: np.ndarray, device: torch.device, *, max_fraction: float = 0.5) -> torch.Tensor:
    """The uint8 images as one tensor on `device` when they fit in max_fraction of its free
    memory, else in (pinned, on CUDA) host memory."""
    t = load(images)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if t.numel() < max_fraction * free:
            return t.to(device)
        return t.pin_memory()
    return t


def batch_to_device(images: torch.Tensor, idx: torch.Tensor, device: torch.device, *, channels_last: bool = False) -> torch.Tensor:
    """Gather images[idx] (uint8, wherever they live) and return the float batch on device."""
    if images.device != idx.device:
        idx = idx.to(images.device)
    return to_float(images[idx].to(device, non_blocking=True), channels_last=channels_last)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of range(n) for one epoch: a function of (seed, epoch) only, so a
    resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def weighted_epoch_order(weights: torch.Tensor | np.ndarray, seed: int, epoch: int) -> torch.Tensor:
    """One epoch of len(weights) indices drawn with replacement, index i with probability
    weights[i] / sum(weights): oversampling (a face of weight 3 is seen three times as often as one
    of weight 1). Like epoch_order, a function of (seed, epoch) only."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    if w.ndim != 1 or len(w) == 0 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be a non-empty 1-D array of finite non-negative numbers with a positive sum, "
                         f"got shape {tuple(w.shape)}, min {w.min().item() if w.numel() else None}")
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.multinomial(w, len(w), replacement=True, generator=g)


def parse_oversample(text: str) -> tuple[str, float]:
    """A command line's --oversample LABEL=W: (LABEL, W), W a positive finite number (the label is
    checked against the data by oversample_weights)."""
    label, sep, w = text.partition("=")
    try:
        factor = float(w)
    except ValueError:
        factor = math.nan
    if not sep or not label or not (factor > 0 and math.isfinite(factor)):
        raise argparse.ArgumentTypeError(f"expected LABEL=W with W a positive number, got {text!r}")
    return label, factor


def oversample_weights(labels: np.ndarray, names: Sequence[str], label: str, factor: float) -> np.ndarray:
    """(N,) sampling weights for weighted_epoch_order: `factor` for the faces whose `label` is 1, 1 for
    the rest (labels: (N, L) 0/1 in the order of `names`)."""
    if label not in names:
        raise ValueError(f"--oversample: unknown label {label!r}; the data's labels are {list(names)}")
    return np.where(np.asarray(labels)[:, list(names).index(label)] == 1, float(factor), 1.0)


def schedule(num_labelled_batches: int, num_unlabelled_batches: int) -> list[bool]:
    """The order of one epoch's batches, True for labelled: spread evenly in proportion,
    as the paper interleaves labelled and unlabelled batches."""
    total = num_labelled_batches + num_unlabelled_batches
    if num_labelled_batches == 0 or num_unlabelled_batches == 0:
        return [num_labelled_batches > 0] * total
    # labelled batch j sits at round((j + 0.5) * total / num_labelled)
    slots = {int((j + 0.5) * total / num_labelled_batches) for j in range(num_labelled_batches)}
    return [i in slots for i in range(total)]
