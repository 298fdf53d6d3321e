"""The one place that decides where tensors live."""
from __future__ import annotations

import torch


def default_device(prefer: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU.

    prefer: "auto" | "cpu" | "cuda" | "cuda:N". Asking for CUDA on a machine without it is an
    error, not a silent fallback.
    """
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if prefer == "cpu":
        return torch.device("cpu")
    if prefer.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} was asked for, but CUDA is not available on this machine")
        return torch.device(prefer)
    raise ValueError(f"unknown device {prefer!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
