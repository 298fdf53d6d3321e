"""What the baselines share: the data of a run, a classifier of the encoder's shape, the test metric,
the run folder and the command line.

Every baseline reads the same data as `python -m train` (train.trainer.load_data, then
train.data.semi_supervised with the run's seed) and is scored as train/evaluate.py scores CCVAE:
per label, the accuracy of "q(y_i = 1 | x) > 0.5" on the test split (unknown cells skipped),
then the mean over labels.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from ccvae.networks import Encoder, default_channels
from train import batches
from train.config import CONFIG_NAME, TrainConfig, load_recipe, override, parse_setting, save
from train.trainer import load_data

METRICS_NAME = "metrics.json"
MODEL_CONFIG_NAME = "config.json"  # the network's constructor arguments: rebuilds it with its weights
WEIGHTS_NAME = "model.safetensors"


def channels_of(config: TrainConfig) -> list[int]:
    """The encoder's conv widths: the config's, or the paper's default for its image size."""
    return list(config.channels) if config.channels is not None else list(default_channels(config.image_size))


def encoder_trunk(*, image_size: int, channels: Sequence[int], hidden_dim: int, in_channels: int = 3) -> nn.Sequential:
    """ccvae.networks.Encoder's conv trunk: x (B, C, H, W) -> h (B, hidden_dim), ReLU'd."""
    return Encoder(image_size=image_size, in_channels=in_channels, channels=channels, hidden_dim=hidden_dim,
                   latent_dim=1).body


class LabelClassifier(nn.Module):
    """q(y | x) = prod_i Bernoulli(y_i; sigmoid(a_i)), a = W dropout(trunk(x)) + b: (B, L) logits.

    The trunk is a copy of CCVAE's encoder trunk (its own weights); W (L, hidden_dim) is one linear
    head per label. dropout: the probability of zeroing an entry of h in training (0: none).
    """

    def __init__(self, *, num_labels: int, image_size: int, channels: Sequence[int], hidden_dim: int,
                 in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.body = encoder_trunk(image_size=image_size, channels=channels, hidden_dim=hidden_dim,
                                  in_channels=in_channels)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(x))).float()  # (B, L)


def semi_supervised_data(config: TrainConfig):
    """(train_set, labelled, unlabelled) exactly as `python -m train` splits them."""
    from train.data import semi_supervised

    train_set = load_data(config, "train", config.limit)
    labelled, unlabelled = semi_supervised(train_set, config.sup_frac, seed=config.seed)
    if len(labelled) == 0:
        raise ValueError(f"sup_frac {config.sup_frac} leaves no labelled image among {len(train_set)}; "
                         "the baselines need some")
    return train_set, labelled, unlabelled


def labels_tensor(labels: np.ndarray, device: torch.device) -> torch.Tensor:
    """int8 labels (N, L) in {0, 1, -1 = unknown} as float32 on device."""
    return torch.from_numpy(np.asarray(labels, dtype=np.float32)).to(device)


def steps_per_epoch(config: TrainConfig, labelled, unlabelled) -> int:
    """The trainer's steps in an epoch (train.batches.steps_per_epoch)."""
    return batches.steps_per_epoch(len(labelled), len(unlabelled), config.batch_size)


@torch.no_grad()
def label_accuracy(predict: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, labels: np.ndarray, *,
                   device: torch.device, batch_size: int = 500) -> np.ndarray:
    """Per-label accuracy (L,) of predict(x) -> (B, L) bool (y_i = 1 predicted) against labels (N, L),
    cells of -1 (unknown) skipped, as train.evaluate.classification_and_reconstruction counts it."""
    correct = known = 0
    for start in range(0, len(images), batch_size):
        x = batches.to_float(batches.load(images[start:start + batch_size])).to(device)
        y = labels_tensor(labels[start:start + batch_size], device)
        hit = (predict(x).float() == y) & (y >= 0)
        correct = correct + hit.sum(0).cpu().numpy()
        known = known + (y >= 0).sum(0).cpu().numpy()
    return correct / np.maximum(known, 1)


def test_metrics(config: TrainConfig, predict: Callable[[torch.Tensor], torch.Tensor], *, device: torch.device,
                 label_names: Sequence[str], **extra) -> dict:
    """The keys every baseline reports, scored on the first config.eval_limit test images; `extra`
    (train_seconds, labelled, unlabelled, epochs, ...) is added as given."""
    test = load_data(config, "test", config.eval_limit)
    if list(test.label_names) != list(label_names):
        raise ValueError(f"the test split's labels {test.label_names} differ from the training labels {list(label_names)}")
    per_label = label_accuracy(predict, test.images, test.labels, device=device)
    return {"mean_accuracy": float(per_label.mean()),
            "per_label_accuracy": dict(zip(label_names, map(float, per_label))),
            "num_test_images": int(len(test)), **extra}


def write_run(out: Path, *, metrics: dict, config: TrainConfig, model: nn.Module | None = None,
              model_config: dict | None = None) -> None:
    """out/metrics.json and the resolved run settings (train_config.json); with a model, also its
    weights (model.safetensors) and constructor arguments (config.json)."""
    out.mkdir(parents=True, exist_ok=True)
    save(config, out / CONFIG_NAME)
    if model is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / WEIGHTS_NAME))
        (out / MODEL_CONFIG_NAME).write_text(json.dumps(model_config, indent=2) + "\n")
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")


def base_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every baseline's command line takes (the run's length is each baseline's own)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--recipe", default="synthetic-faces", help="a recipe in train/recipes/ or a recipe .json")
    p.add_argument("--sup-frac", type=float, help="labelled fraction f of the training set")
    p.add_argument("--seed", type=int, help="the run's seed (labelled split, initialisation, data order)")
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--eval-limit", type=int, help="score on the first N test images only")
    p.add_argument("--batch-size", type=int, help="batch size")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                   help="override any other setting of train.config.TrainConfig (VALUE as JSON); may repeat")
    p.add_argument("--out", type=Path, help="write metrics.json, the weights and the settings here")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def resolve(args: argparse.Namespace, **more) -> TrainConfig:
    """The recipe with the command line's settings (None: not given) and --set pairs."""
    given = {"sup_frac": args.sup_frac, "seed": args.seed, "limit": args.limit, "eval_limit": args.eval_limit,
             "batch_size": args.batch_size, **more}
    changes = {k: v for k, v in given.items() if v is not None}
    for text in args.settings:
        name, value = parse_setting(text)
        changes[name] = value
    return override(load_recipe(args.recipe), changes)


def run_cli(args: argparse.Namespace, train: Callable[..., dict], **more) -> int:
    """Resolve the settings, train, print the metrics as JSON; an error is one line and status 2."""
    from ccvae import default_device

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        config = resolve(args, **more)
        start = time.time()
        metrics = train(config, out=args.out, device=default_device(args.device), progress=not args.quiet)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if k != "per_label_accuracy"}))
    print(f"mean test accuracy {metrics['mean_accuracy']:.4f} in {time.time() - start:.0f} s", file=sys.stderr)
    return 0
