"""Batches from uint8 image arrays: the one path from a dataset to model-ready tensors.

Images are stored as uint8 (N, H, W, 3). On a GPU the whole array is moved to the device once
when it fits, so a batch is an on-device gather; on the CPU it is read into memory once.
"""
from __future__ import annotations

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


def schedule(num_labelled_batches: int, num_unlabelled_batches: int) -> list[bool]:
    """The order of one epoch's batches, True for labelled: spread evenly in proportion,
    as the paper interleaves labelled and unlabelled batches."""
    total = num_labelled_batches + num_unlabelled_batches
    if num_labelled_batches == 0 or num_unlabelled_batches == 0:
        return [num_labelled_batches > 0] * total
    # labelled batch j sits at round((j + 0.5) * total / num_labelled)
    slots = {int((j + 0.5) * total / num_labelled_batches) for j in range(num_labelled_batches)}
    return [i in slots for i in range(total)]
