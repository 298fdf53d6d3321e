"""The oracle: a small CNN trained on the synthetic generator's true labels, used as a judge.

Evaluation reads the labels of *generated* images with it (did the edit add glasses?), so it is
trained apart from any CCVAE, on rendered faces whose labels are known exactly, with blur and
noise augmentation so that slightly blurry VAE decodings are judged fairly.

    python -m train.oracle --n-train 20000 --epochs 8 --out checkpoints/oracle-synthetic

    from train.oracle import load_oracle
    oracle = load_oracle("checkpoints/oracle-synthetic")
    oracle.predict(x)          # x (B, 3, H, W) float in [0, 1] -> (B, L) bool
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ccvae.hub import CheckpointError, check_state_dict

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "ccvae-oracle"
FORMAT_VERSION = 1


class Oracle(nn.Module):
    """Multi-label classifier: x (B, 3, S, S) in [0, 1] -> logits (B, L), one per label name.

    Four stride-2 conv blocks (S -> S/16) and a two-layer head; ~13 M multiply-adds at S = 64.
    """

    def __init__(self, *, label_names: Sequence[str], image_size: int = 64, channels: Sequence[int] = (32, 64, 128, 128),
                 hidden_dim: int = 256):
        super().__init__()
        if not label_names:
            raise ValueError("label_names must name at least one label")
        if image_size % 2 ** len(channels) or image_size < 2 ** len(channels):
            raise ValueError(f"image_size {image_size} must be a multiple of 2^{len(channels)} = {2 ** len(channels)}")
        self.config = {"label_names": list(label_names), "image_size": int(image_size),
                       "channels": [int(c) for c in channels], "hidden_dim": int(hidden_dim)}
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden_dim), nn.ReLU(inplace=True),
                                  nn.Linear(hidden_dim, len(label_names)))

    @property
    def label_names(self) -> list[str]:
        return self.config["label_names"]

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"the oracle takes (B, 3, {self.image_size}, {self.image_size}) images, got {tuple(x.shape)}")
        return self.head(self.features(x * 2 - 1))                       # (B, L)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: label present. Runs in eval mode, restoring the previous mode."""
        was_training = self.training
        self.eval()
        try:
            return self(x.to(next(self.parameters()).device, torch.float32)) > 0
        finally:
            self.train(was_training)

    def save(self, directory: Path) -> None:
        save_network(self, directory, fmt=FORMAT)


def save_network(net: nn.Module, directory: Path, *, fmt: str) -> None:
    """A judge network (the oracle, the factor reader) as config.json (its `config`, "format": fmt and
    FORMAT_VERSION) and model.safetensors, in `directory`."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {**net.config, "format": fmt, "format_version": FORMAT_VERSION}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_network(cls, path, *, fmt: str, what: str, map_location="cpu"):
    """Rebuild a judge network `cls` saved by `save_network` with format `fmt` and load its weights
    strictly (no pickles). A missing, damaged or mismatched file raises CheckpointError naming it;
    `what` names the network in the messages ("an oracle")."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path} is not {what} folder: missing {', '.join(missing)}")
    try:
        config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / CONFIG_NAME} is not valid JSON: {e}") from None
    if not isinstance(config, dict) or config.pop("format", None) != fmt:
        raise CheckpointError(f"{path / CONFIG_NAME} does not describe {what} (expected \"format\": \"{fmt}\")")
    version = config.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path / CONFIG_NAME} has format_version {version}; this code reads {FORMAT_VERSION}")
    try:
        model = cls(**config)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path / CONFIG_NAME} describes an invalid {what.split(' ', 1)[1]}: {e}") from None
    try:
        state = load_file(str(path / WEIGHTS_NAME), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path / WEIGHTS_NAME} is damaged or not a safetensors file: {e}") from None
    check_state_dict(model.state_dict(), state, path / WEIGHTS_NAME)
    model.load_state_dict(state, strict=True)
    return model.eval().to(map_location)


def load_oracle(path, *, map_location="cpu") -> Oracle:
    """Rebuild an Oracle from config.json and load model.safetensors strictly (no pickles)."""
    return load_network(Oracle, path, fmt=FORMAT, what="an oracle", map_location=map_location)


# ---------------------------------------------------------------------------------------------
# Training.

def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.array(images, copy=True)).permute(0, 3, 1, 2).float().div_(255)


def degrade(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Augmentation that mimics VAE decodings: gaussian blur (sigma 0..1.2 px) on most images, mild noise."""
    b = x.shape[0]
    sigma = torch.rand(b, generator=generator) * 1.2
    sigma[torch.rand(b, generator=generator) < 0.3] = 0.0
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-r[None] ** 2 / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)                                       # (B, 5) separable kernels
    # Depthwise separable blur, each image its own kernel: fold B into channels.
    y = x.reshape(1, b * 3, *x.shape[2:])
    kx = k.repeat_interleave(3, 0)                                       # (3B, 5)
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), kx[:, None, None, :], groups=b * 3)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), kx[:, None, :, None], groups=b * 3)
    y = y.reshape_as(x)
    noise = torch.randn(x.shape, generator=generator) * (torch.rand(b, 1, 1, 1, generator=generator) * 0.04)
    return (y + noise).clamp_(0, 1)


@torch.no_grad()
def accuracy(oracle: Oracle, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 500,
             blur: bool = False) -> np.ndarray:
    """Per-label accuracy (L,) of the oracle on uint8 images (N, H, W, 3) with 0/1 labels (N, L)."""
    g = torch.Generator().manual_seed(1)
    hits = np.zeros(labels.shape[1])
    for a in range(0, len(images), batch_size):
        x = to_tensor(images[a:a + batch_size])
        if blur:
            x = degrade(x, g)
        hits += (oracle.predict(x).numpy() == (labels[a:a + batch_size] > 0)).sum(0)
    return hits / len(images)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.oracle", description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=20_000, help="training faces (the first N of the train split)")
    p.add_argument("--n-test", type=int, default=5_000, help="test faces (the first N of the test split)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="dataset seed (faces) and training seed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", type=Path, default=Path("checkpoints/oracle-synthetic"))
    return p.parse_args(argv)


def fit(net: nn.Module, images: np.ndarray, loss, *, epochs: int, batch_size: int, lr: float, seed: int,
        report) -> float:
    """Train a judge network on degraded copies (`degrade`) of uint8 images (N, S, S, 3): AdamW
    with a one-cycle rate, shuffled batches of sorted indices. loss(x, idx) -> scalar for the batch
    x of images[idx]; report(epoch, mean loss, seconds) after each epoch. Returns the seconds taken."""
    steps = epochs * math.ceil(len(images) / batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(images), generator=g).numpy()
        total = 0.0
        for a in range(0, len(perm), batch_size):
            idx = np.sort(perm[a:a + batch_size])
            value = loss(degrade(to_tensor(images[idx]), g), idx)
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
            total += value.item() * len(idx)
        report(epoch, total / len(images), time.time() - start)
    return time.time() - start


def main(args: argparse.Namespace) -> dict:
    from train.data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train = load_dataset("synthetic", "train", image_size=args.image_size, seed=args.seed, limit=args.n_train,
                         cache_dir=args.cache_dir)
    test = load_dataset("synthetic", "test", image_size=args.image_size, seed=args.seed, limit=args.n_test,
                        cache_dir=args.cache_dir)
    images = np.asarray(train.images)                                  # (N, S, S, 3) uint8, in memory
    labels = torch.from_numpy(train.labels.astype(np.float32))         # (N, L)
    oracle = Oracle(label_names=train.label_names, image_size=args.image_size)

    def loss(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(oracle(x), labels[idx])

    def report(epoch: int, mean_loss: float, seconds: float) -> None:
        acc = accuracy(oracle, test.images, test.labels)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {mean_loss:.4f}  test acc mean {acc.mean():.4f} "
              f"min {acc.min():.4f} ({train.label_names[int(acc.argmin())]})  {seconds:.0f}s", flush=True)
    seconds = fit(oracle, images, loss, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  report=report)
    acc = accuracy(oracle, test.images, test.labels)
    acc_blur = accuracy(oracle, test.images, test.labels, blur=True)
    oracle.save(args.out)
    command = "python -m train.oracle " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_card(args.out, oracle, acc, acc_blur, command=command, seconds=seconds, n_train=len(images),
               n_test=len(test), threads=torch.get_num_threads())
    print(f"saved {args.out}: mean test accuracy {acc.mean():.4f}, min {acc.min():.4f}, blurred mean {acc_blur.mean():.4f}")
    return {"accuracy": dict(zip(train.label_names, acc.tolist())), "seconds": seconds}


def write_card(directory: Path, oracle: Oracle, acc: np.ndarray, acc_blur: np.ndarray, *, command: str,
               seconds: float, n_train: int, n_test: int, threads: int) -> None:
    rows = "\n".join(f"| {n} | {a:.4f} | {b:.4f} |" for n, a, b in zip(oracle.label_names, acc, acc_blur))
    text = f"""---
tags: [ccvae, oracle, synthetic-faces]
---
# Oracle for synthetic faces

A small CNN ({sum(p.numel() for p in oracle.parameters()):,} parameters) that reads the
{len(oracle.label_names)} labels of `train.data.synthetic` faces ({oracle.image_size}x{oracle.image_size}).
It was trained on the generator's true labels (first {n_train:,} faces of the train split, seed 0),
with gaussian blur (sigma 0-1.2 px) and noise augmentation so it judges blurry VAE decodings
fairly, and is used by evaluation as an independent judge of generated images.

Trained in {seconds / 60:.1f} min on the CPU ({threads} threads) with:

    {command}

Test accuracy on the first {n_test:,} faces of the test split (clean, and degraded with the
training augmentation): mean {acc.mean():.4f} / {acc_blur.mean():.4f}, lowest {acc.min():.4f}.

| label | accuracy | accuracy (blurred + noise) |
|---|---|---|
{rows}

    from train.oracle import load_oracle
    oracle = load_oracle("checkpoints/oracle-synthetic")
    oracle.predict(x)   # x: (B, 3, {oracle.image_size}, {oracle.image_size}) float in [0, 1] -> (B, L) bool
"""
    (Path(directory) / "README.md").write_text(text)


if __name__ == "__main__":
    main(parse_args())
