"""Can a decoder architecture draw each label when it is *told* every generating factor?
`python -m train.informed [CHECKPOINT] --minutes 10`.

A CCVAE's decoder only draws what its latents carry, and its encoder only keeps what the decoder
learns to use. When a characteristic is drawn badly (the synthetic faces' earrings, README), this
separates the two: a decoder of the checkpoint's architecture (`ccvae.networks.Decoder`, its channels,
hidden width, refine stage and FiLM; no label gates, since the labels come in as they are) is trained
from the synthetic faces' true labels and generating factors instead of z,

    u = standardise([y, t(f_1), .., t(f_F)])      t: one-hot for a kind, (cos, sin) for a hue
    min  E || sigmoid(decoder(u)) - x ||^2        (Adam, over the training split)

and the oracle then reads the test faces it draws from their factors. Nothing is inferred, so what
the oracle misses, this decoder did not learn to draw in that budget: an upper bound, for that
architecture and training budget, on what the VAE's reconstructions can show (README: on 2 CPU cores
the paper's decoder draws earrings that the oracle sees on few of the faces after 10 minutes).

    python -m train.informed --minutes 10                        # the bundled model's decoder
    python -m train.informed --minutes 10 --decoder-film         # the same with FiLM
    python -m train.informed --decoder-film --batch-size 16 --steps 10625 --oversample Wearing_Earrings=3
                                    # earring faces drawn 3x as often (README: 0.799 against 0.636)
    python -m train.informed --minutes 8 --residual-emphasis 1
                                    # each pixel's gradient scaled by its error (README: Residual emphasis)
    python -m train.informed --minutes 8 --residual-emphasis 1 --residual-emphasis-floor 0.1
                                    # the same with a higher floor under the errors
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ccvae import CCVAE, CheckpointError, default_device
from ccvae.distributions import EMPHASIS_FLOOR, Emphasis, check_emphasis, check_floor, emphasise_residuals
from ccvae.networks import Decoder

from . import batches
from .data import load_dataset
from .data.synthetic import FACTOR_NAMES
from .evaluate import BUNDLED_MODEL, DEFAULT_ORACLE
from .oracle import load_oracle
from .probe import factor_target


def factor_inputs(labels: np.ndarray, factors: dict[str, np.ndarray], *, fit: int) -> np.ndarray:
    """The decoder's input for each face: (N, U) float32, the labels and every factor's regression
    target (`probe.factor_target`), standardised with the mean and std of the first `fit` faces
    (the training faces; the kinds are found over all N, so train and test get the same columns)."""
    cols = [np.asarray(labels, np.float64)]
    for name in FACTOR_NAMES:
        t = factor_target(name, np.asarray(factors[name]))
        cols.append(t if t.ndim == 2 else t[:, None])
    u = np.concatenate(cols, 1)
    mean, std = u[:fit].mean(0), u[:fit].std(0)
    return ((u - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def informed_decoder(config: dict, input_dim: int, *, film: bool | None = None,
                     channels: list[int] | None = None) -> Decoder:
    """A decoder with a CCVAE config's architecture that reads `input_dim` inputs instead of z
    (`film`, `channels` None: as the config has them)."""
    channels = config["channels"] if channels is None else channels
    return Decoder(image_size=config["image_size"], out_channels=config["in_channels"], channels=channels,
                   hidden_dim=config["hidden_dim"], latent_dim=input_dim, refine_channels=config["refine_channels"],
                   film=config["decoder_film"] if film is None else film)


def _device(module: torch.nn.Module) -> torch.device:
    """Where the module's parameters are (the CPU for one without any)."""
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def train_informed(decoder: Decoder, images: torch.Tensor, inputs: torch.Tensor, *, batch_size: int = 64,
                   lr: float = 1e-3, steps: int | None = None, minutes: float | None = None, seed: int = 0,
                   weights: np.ndarray | None = None, emphasis: float | Emphasis = 0.0) -> dict:
    """Adam on the summed squared error of sigmoid(decoder(u)) for `steps` steps or `minutes` of
    training, whichever ends first (at least one of them). images: uint8 (N, H, W, C); inputs: (N, U).
    Trains where the decoder's parameters are (its batches are moved there). `weights` (N,): draw
    each epoch's faces with replacement in proportion to them (`batches.weighted_epoch_order`)
    instead of a permutation. `emphasis`: each pixel's gradient scaled by its error to that power (or
    an Emphasis with a floor), the loss's value unchanged (`ccvae.distributions.emphasise_residuals`,
    as the trainer's --residual-emphasis).
    Returns {"steps", "epochs", "seconds", "loss"} (loss: the mean of the last 50 steps')."""
    if steps is None and minutes is None:
        raise ValueError("train_informed needs steps or minutes (or both) to know when to stop")
    if len(images) != len(inputs):
        raise ValueError(f"{len(images)} images but {len(inputs)} input rows")
    if weights is not None and len(weights) != len(images):
        raise ValueError(f"{len(images)} images but {len(weights)} weights")
    if not 1 <= batch_size <= len(images):
        raise ValueError(f"batch_size must be between 1 and the {len(images)} training faces, got {batch_size}")
    torch.manual_seed(seed)
    device = _device(decoder)
    inputs = inputs.to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    decoder.train()
    start, done, epoch = time.perf_counter(), 0, 0
    losses = deque(maxlen=50)  # the last steps' losses, kept on the device (no sync per step)

    def finished() -> bool:
        return (steps is not None and done >= steps) or (
            minutes is not None and time.perf_counter() - start >= 60 * minutes)

    while not finished():
        order = (batches.epoch_order(len(images), seed, epoch) if weights is None
                 else batches.weighted_epoch_order(weights, seed, epoch))
        epoch += 1
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            x = batches.to_float(images[idx]).to(device)                       # (B, C, H, W)
            logits = emphasise_residuals(x, decoder(inputs[idx]), emphasis)
            loss = F.mse_loss(torch.sigmoid(logits), x, reduction="none").flatten(1).sum(1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            done += 1
            if finished():
                break
    decoder.eval()
    return {"steps": done, "epochs": done * batch_size / len(images), "seconds": time.perf_counter() - start,
            "loss": torch.stack(list(losses)).mean().item()}


@torch.no_grad()
def judge_informed(decoder: Decoder, oracle, images: np.ndarray, inputs: torch.Tensor, labels: np.ndarray,
                   label_names: list[str], *, batch: int = 500) -> dict:
    """What the oracle reads in the faces the decoder draws from their factors, against the faces.

    Returns psnr (of the mean squared error, as train.evaluate's) and, per label of the oracle's that
    the data has, {"faces": faces that have it, "seen_faces"/"seen_drawn": the oracle sees it on those
    faces / on what the decoder drew of them, "accuracy_faces"/"accuracy_drawn": the oracle's accuracy
    over all faces}."""
    cols = [label_names.index(n) for n in oracle.label_names if n in label_names]
    names = [label_names[c] for c in cols]
    reads = [oracle.label_names.index(n) for n in names]
    sq, on_faces, on_drawn = 0.0, [], []
    device = _device(decoder)
    for s in range(0, len(images), batch):
        x = batches.to_float(batches.load(images[s:s + batch]))
        drawn = torch.sigmoid(decoder(inputs[s:s + batch].to(device))).cpu()  # the oracle reads on the CPU
        sq += (drawn - x).square().mean((1, 2, 3)).sum().item()
        on_faces.append(oracle.predict(x)[:, reads].numpy())
        on_drawn.append(oracle.predict(drawn)[:, reads].numpy())
    y = np.asarray(labels)[:, cols] == 1
    on_faces, on_drawn = np.concatenate(on_faces), np.concatenate(on_drawn)
    per_label = {}
    for j, name in enumerate(names):
        has = y[:, j]
        per_label[name] = {"faces": int(has.sum()),
                           "seen_faces": float(on_faces[has, j].mean()) if has.any() else math.nan,
                           "seen_drawn": float(on_drawn[has, j].mean()) if has.any() else math.nan,
                           "accuracy_faces": float((on_faces[:, j] == y[:, j]).mean()),
                           "accuracy_drawn": float((on_drawn[:, j] == y[:, j]).mean())}
    mse = sq / len(images)
    return {"psnr": 10 * math.log10(1.0 / max(mse, 1e-12)), "labels": per_label}


def format_judged(judged: dict) -> str:
    rows = [f"{'label':<22}{'faces':>7}{'seen: faces':>13}{'drawn':>8}{'accuracy: faces':>17}{'drawn':>8}"]
    for name, r in judged["labels"].items():
        rows.append(f"{name:<22}{r['faces']:>7}{r['seen_faces']:>13.3f}{r['seen_drawn']:>8.3f}"
                    f"{r['accuracy_faces']:>17.3f}{r['accuracy_drawn']:>8.3f}")
    return "\n".join(rows)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.informed", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_MODEL),
                   help="model folder or Hub id whose decoder architecture is trained (default: the bundled model)")
    p.add_argument("--decoder-film", action=argparse.BooleanOptionalAction, default=None,
                   help="FiLM in the decoder (default: as the checkpoint has it)")
    p.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="the conv widths as the encoder lists them, from the image down (default: the checkpoint's)")
    p.add_argument("--minutes", type=float, help="training time (stops at --steps if that comes first)")
    p.add_argument("--steps", type=int, help="training steps (stops at --minutes if that comes first)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--n-train", type=int, default=None, help="synthetic training faces (default: all 50,000)")
    p.add_argument("--n-test", type=int, default=5000, help="synthetic test faces judged")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data order")
    p.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE, help="oracle folder")
    p.add_argument("--oversample", metavar="LABEL=W", type=batches.parse_oversample,
                   help="draw the training faces that have LABEL W times as often as the others (W > 0)")
    p.add_argument("--residual-emphasis", type=float, default=0.0, metavar="P",
                   help="scale each pixel's gradient by its error to the power P, as the trainer's option (0 = off)")
    p.add_argument("--residual-emphasis-floor", type=float, default=EMPHASIS_FLOOR, metavar="EPS",
                   help="floor eps under each pixel's error, as the trainer's option (default %(default)s)")
    p.add_argument("--device", default="auto", help="where the decoder trains: auto (CUDA when present), cpu, cuda, cuda:N")
    args = p.parse_args(argv)
    if args.minutes is None and args.steps is None:
        p.error("say how long to train: --minutes M, --steps N, or both")
    if args.minutes is not None and not args.minutes > 0:
        p.error(f"--minutes must be positive, got {args.minutes}")
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if not args.lr > 0:
        p.error(f"--lr must be positive, got {args.lr}")
    if args.n_train is not None and args.n_train < args.batch_size:
        p.error(f"--n-train must be at least one batch ({args.batch_size}), got {args.n_train}")
    if args.n_test < 1:
        p.error(f"--n-test must be at least 1, got {args.n_test}")
    try:
        check_emphasis(args.residual_emphasis, "--residual-emphasis")
        check_floor(args.residual_emphasis_floor, "--residual-emphasis-floor")
    except ValueError as e:
        p.error(str(e))
    if args.channels is not None and min(args.channels) < 1:
        p.error(f"--channels must be positive widths, got {args.channels}")
    return args


def main(args: argparse.Namespace) -> int:
    try:
        device = default_device(args.device)
        config = CCVAE.from_pretrained(args.checkpoint).config
        oracle = load_oracle(args.oracle)
        if oracle.image_size != config["image_size"]:
            raise ValueError(f"the oracle {args.oracle} reads {oracle.image_size}x{oracle.image_size} images, "
                             f"the checkpoint draws {config['image_size']}x{config['image_size']}")
        train = load_dataset("synthetic", "train", image_size=config["image_size"], seed=args.data_seed,
                             limit=args.n_train)
        test = load_dataset("synthetic", "test", image_size=config["image_size"], seed=args.data_seed,
                            limit=args.n_test)
        weights = (batches.oversample_weights(train.labels, train.label_names, *args.oversample)
                   if args.oversample else None)
    except (CheckpointError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels = np.concatenate([np.asarray(train.labels), np.asarray(test.labels)])
    factors = {k: np.concatenate([np.asarray(train.factors[k]), np.asarray(test.factors[k])]) for k in FACTOR_NAMES}
    u = torch.from_numpy(factor_inputs(labels, factors, fit=len(train)))
    channels = args.channels or config["channels"]
    try:
        decoder = informed_decoder(config, u.shape[1], film=args.decoder_film, channels=channels).to(device)
    except ValueError as e:  # channels that do not fit the image size
        print(f"error: {e}", file=sys.stderr)
        return 2
    film = "with" if decoder.film_widths else "without"
    print(f"training {args.checkpoint}'s decoder ({film} FiLM, channels {' '.join(map(str, channels))}) from {u.shape[1]} label and factor inputs on "
          f"{len(train)} synthetic faces, batch {args.batch_size}, lr {args.lr:g}, on {device}"
          + (f", faces with {args.oversample[0]} drawn {args.oversample[1]:g}x as often" if args.oversample else "")
          + (f", residual emphasis {args.residual_emphasis:g} (floor {args.residual_emphasis_floor:g})"
             if args.residual_emphasis else ""))
    run = train_informed(decoder, batches.load(train.images), u[:len(train)], batch_size=args.batch_size, lr=args.lr,
                         steps=args.steps, minutes=args.minutes, seed=args.seed, weights=weights,
                         emphasis=Emphasis(args.residual_emphasis, args.residual_emphasis_floor))
    judged = judge_informed(decoder, oracle, test.images, u[len(train):], np.asarray(test.labels), test.label_names)
    print(f"{run['steps']} steps ({run['epochs']:.2f} epochs) in {run['seconds'] / 60:.1f} min; "
          f"{len(test)} test faces drawn from their factors: PSNR {judged['psnr']:.2f} dB")
    print(format_judged(judged))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
