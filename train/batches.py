"""Batches from uint8 image arrays: the one path from a dataset to model-ready tensors.

Images are stored as uint8 (N, H, W, 3). On a GPU the whole array is moved to the device once
when it fits, so a batch is an on-device gather; on the CPU it is read into memory once.
"""
from __future__ import annotations

import math

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


def steps_per_epoch(num_labelled: int, num_unlabelled: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: a pass over the unlabelled images, each step with a labelled
    batch beside its unlabelled one; with no unlabelled images, a pass over the labelled ones."""
    return math.ceil((num_unlabelled or num_labelled) / batch_size)


def cycled_batch(n: int, size: int, seed: int, t: int) -> torch.Tensor:
    """Batch t (0, 1, ...) of an endless stream over range(n): pass p of the stream is the
    permutation epoch_order(n, seed, 2 p), so every item is seen once a pass and a batch may run
    over into the next pass. A function of (n, size, seed, t) only, so a resumed run sees the same
    batches. This is how a small labelled set is cycled beside the unlabelled batches."""
    if n < 1 or size < 1:
        raise ValueError(f"cycled_batch needs n >= 1 and size >= 1, got n={n}, size={size}")
    start = t * size
    first, last = start // n, (start + size - 1) // n
    stream = torch.cat([epoch_order(n, seed, 2 * p) for p in range(first, last + 1)])
    offset = start - first * n
    return stream[offset:offset + size]
