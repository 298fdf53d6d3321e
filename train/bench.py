"""Training throughput: `python -m train.bench [--device cpu|cuda]`.

Prints images per second, at the paper's CelebA setting (batch 200, K = 100, 64x64, 45 latents,
18 labels), for: the supervised step (Eq. 1, one encoder pass), the unlabelled step (exact
marginal over labels), a straightforward supervised step that encodes each batch twice as the
official code does (measured in the same run, so the ratio is side by side), and the data
pipeline (uint8 cache -> float batch on the device).

The three steps are timed one step each in turn (a rotating order), --steps times per round and
--rounds rounds; a round's figure is its median step, each printed figure the median over rounds,
and the speed-up the median of the per-round ratios, so the two steps it compares always ran next
to each other, whatever the machine was doing meanwhile.
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from ccvae import CCVAE, default_device, objective

from . import batches
from .trainer import make_optimizer


def supervised_encode_twice(model: CCVAE, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The baseline: the official code's supervised step, written plainly. The encoder runs once
    for the ELBO sample and again inside the classifier loss for the K samples of q(y|x)."""
    C = model.characteristic_size  # z_c = z[:, :C]
    q = model.encode(x)
    z = q.sample()
    log_px = model.log_likelihood(x, model.decode_logits(z))
    log_qyzc = objective.log_classifier(model, z[:, :C], y)
    q_again = model.encode(x)  # the second encoder pass
    zk = q_again.sample(k)[..., :C]
    log_qyx = torch.logsumexp(objective.log_classifier(model, zk, y), 0) - math.log(k)
    prior = model.conditional_prior(y)
    log_pz = prior.log_prob(z[:, :C]).sum(-1) + (-0.5 * z[:, C:].square() - 0.5 * math.log(2 * math.pi)).sum(-1)
    kl = q.log_prob(z).sum(-1) - log_pz
    w = torch.exp(log_qyzc - log_qyx)
    elbo = w * (log_px - kl - log_qyzc) + log_qyx + objective.log_label_prior(model, y)
    return -elbo.mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, device: torch.device, *, warmup: int, steps: int) -> float:
    """Seconds per call of step(), after warmup calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t) / steps


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--steps", type=int, help="timed steps per measurement (default 5 on CPU, 50 on CUDA)")
    p.add_argument("--rounds", type=int, help="rounds of measuring every step in turn; medians are reported "
                   "(default 5 on CPU, 1 on CUDA)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile encoder and decoder")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last memory format (default on, as in training)")
    p.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="the conv widths, as the training setting channels (`python -m train --set channels=[...]`; "
                        "default: the paper's)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    device = default_device(args.device)
    steps = args.steps if args.steps is not None else (50 if device.type == "cuda" else 5)
    rounds = args.rounds if args.rounds is not None else (1 if device.type == "cuda" else 5)
    if steps < 1 or rounds < 1:
        raise SystemExit(f"--steps and --rounds must be at least 1, got {steps} and {rounds}")
    warmup = 10 if args.compile else 2
    B, L = args.batch_size, 18
    torch.manual_seed(0)
    try:
        model = CCVAE(label_names=[f"label{i}" for i in range(L)], latent_dim=45, image_size=args.image_size,
                      channels=args.channels).to(device)
    except ValueError as e:  # channels that do not fit the image size
        raise SystemExit(f"error: {e}") from None
    channels_last = args.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if args.compile:
        model.encoder.compile()
        model.decoder.compile()
    opt = make_optimizer(model, 1e-4)
    g = torch.Generator(device=device).manual_seed(0)
    pool = np.random.default_rng(0).integers(0, 256, (max(4 * B, 2000), args.image_size, args.image_size, 3), dtype=np.uint8)
    images = batches.resident(pool, device)
    y = torch.randint(0, 2, (B, L), device=device).float()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)

    def batch() -> torch.Tensor:
        idx = torch.randint(0, len(pool), (B,), generator=None)
        return batches.batch_to_device(images, idx, device, channels_last=channels_last)

    def train_step(loss_fn):
        def step():
            x = batch()
            with autocast:
                loss = loss_fn(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    results = {}
    cases = {
        "supervised (one encoder pass)": lambda x: objective.supervised(model, x, y, k=args.k, generator=g).loss,
        "unlabelled (exact marginal)": lambda x: objective.unsupervised(model, x, generator=g).loss,
        "baseline: supervised, encoder twice": lambda x: supervised_encode_twice(model, x, y, args.k),
    }
    steps_of = {name: train_step(fn) for name, fn in cases.items()}
    for step in steps_of.values():  # warm every step up before any is timed
        for _ in range(warmup):
            step()
    per_round = {name: [] for name in cases}
    names = list(cases)
    for _ in range(rounds):
        # Interleaved step by step (in a rotating order), so that the steps compared ran next to
        # each other whatever else the machine was doing; a round's figure is its median step.
        seconds = {name: [] for name in names}
        for j in range(steps):
            for name in names[j % len(names):] + names[:j % len(names)]:
                seconds[name].append(time_step(steps_of[name], device, warmup=0, steps=1))
        for name in names:
            per_round[name].append(B / float(np.median(seconds[name])))
    for name, values in per_round.items():
        results[name] = float(np.median(values))
    results["data pipeline (uint8 -> float batch)"] = B / time_step(batch, device, warmup=2, steps=steps * 10)

    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"batch {B}, K = {args.k}, {args.image_size}x{args.image_size}, amp={args.amp}, compile={args.compile}, "
          f"channels_last={channels_last}; median of {rounds} round(s) of {steps} steps")
    for name, ips in results.items():
        spread = f"  (rounds: {', '.join(f'{v:,.0f}' for v in per_round[name])})" if name in per_round and rounds > 1 else ""
        print(f"  {name:40s} {ips:12,.0f} images/s{spread}")
    ratios = [s / b for s, b in zip(per_round["supervised (one encoder pass)"], per_round["baseline: supervised, encoder twice"])]
    ratio = float(np.median(ratios))
    print(f"  speed-up of the supervised step over the baseline: {ratio:.2f}x"
          + (f" (median of rounds: {', '.join(f'{r:.2f}' for r in ratios)})" if rounds > 1 else ""))
    results["speedup"] = ratio
    return results


if __name__ == "__main__":
    main(parse_args())
