"""Semi-supervised CCVAE training: `python -m train --dataset synthetic --sup-frac 1.0 --out runs/NAME`.

One epoch is one pass over the training set, labelled and unlabelled batches interleaved in
proportion (the paper's schedule). Each labelled batch contributes Eq. 1 (ccvae.objective.
supervised), each unlabelled batch the ELBO with labels marginalised (ccvae.objective.
unsupervised). After every epoch: a JSONL log line, figures drawn with ccvae.editing, the model
folder (Hub layout) and the full training state, both replaced atomically. Works unchanged
under torchrun: every rank takes a slice of each batch and gradients are averaged.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ccvae import CCVAE, default_device, editing, objective
from ccvae.distributions import EMPHASIS_FLOOR, Emphasis, check_emphasis, check_floor

from . import batches, figures, modelcard
from .state import ARGS, load_state, read_history, replace_dir, save_state


EDIT_DECAY = 0.99  # per labelled step: the intervention term's edit counts forget with a ~100-step window


class TrainingStopped(Exception):
    """A run ended early on purpose (NaN guard): the message says why; exit status 1."""


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam over the trainable parameters, fused (one kernel for all of them: on this 2-core CPU
    1.3 ms a step instead of 8.4 ms for the per-parameter loop, with the same update rule)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True)


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already says its default in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                formatter_class=_DefaultsHelp)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", choices=["synthetic", "celeba", "folder"], default="synthetic", help="which dataset")
    d.add_argument("--root", type=Path, help="dataset folder (celeba: the folder holding img_align_celeba/; folder: the images)")
    d.add_argument("--labels", type=Path, dest="labels_csv", help="folder dataset: CSV of labels (file name, then one 0/1 column per label)")
    d.add_argument("--label-names", nargs="+", help="train on these labels only (default: all of the dataset's, CelebA: the paper's 18)")
    d.add_argument("--image-size", type=int, default=64, help="image size (64 or 128)")
    d.add_argument("--sup-frac", type=float, default=1.0, help="labelled fraction f of the training set (0 = unsupervised, 1 = fully supervised)")
    d.add_argument("--limit", type=int, help="use only the first N training examples (quick runs)")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset (its images, not the training)")
    d.add_argument("--val-limit", type=int, default=2000, help="validation images scored after each epoch")
    m = p.add_argument_group("model")
    m.add_argument("--latent-dim", type=int, default=45, help="total latent size (one per label + style)")
    m.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="the encoder's conv widths from the image down, mirrored by the decoder "
                        "(default: the paper's 32 32 64 128 at 64x64, one more 128 per doubling)")
    m.add_argument("--hidden-dim", type=int, default=256,
                   help="width of the layer between the convolutions and the latents, both ways (the paper's 256)")
    m.add_argument("--refine-channels", type=int, default=0,
                   help="full-resolution feature maps at the decoder's end (0: the paper's decoder)")
    m.add_argument("--label-gates", action="store_true",
                   help="the decoder also reads a learned soft step of each characteristic latent (its label's presence)")
    m.add_argument("--decoder-film", action="store_true",
                   help="the latents also scale and shift the decoder's feature maps channel-wise at every stage (FiLM)")
    m.add_argument("--likelihood", choices=["laplace", "gaussian", "bernoulli"], default="laplace", help="p(x|z)")
    m.add_argument("--likelihood-scale", type=float, default=0.1, help="scale of p(x|z) (initial value when learned)")
    m.add_argument("--fixed-scale", action="store_true", help="keep the likelihood scale fixed instead of learning it")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=200, help="passes over the training set")
    o.add_argument("--batch-size", type=int, default=200, help="global batch size (split over torchrun ranks)")
    o.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    o.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="constant (the paper) or cosine decay over --epochs to --lr * --min-lr-ratio")
    o.add_argument("--min-lr-ratio", type=float, default=0.05, help="cosine schedule: final rate as a fraction of --lr")
    o.add_argument("--k", type=int, default=100, help="samples of q(z_c|x) that estimate q(y|x)")
    o.add_argument("--classification-weight", type=float, default=0.0, help="alpha: adds alpha * log q(y|x) to the labelled loss (0 = Eq. 1 alone)")
    o.add_argument("--style-kl-weight", type=float, default=1.0, help="beta: weight of the style latents' KL in the loss (1 = the paper's objective)")
    o.add_argument("--style-kl-warmup", type=float, default=0.0,
                   help="epochs (may be fractional) over which the style KL weight rises linearly from 0 to "
                        "--style-kl-weight (0 = none), so the first steps let the style latents carry detail at little "
                        "KL cost (on the synthetic faces a 4-epoch warm-up changed nothing measurable: README, v13)")
    o.add_argument("--intervention-weight", type=float, default=0.0,
                   help="gamma: adds gamma * log q(y_i = v | z'_i) for edits that flip one label in the latent, decoded "
                        "and encoded again (not in the paper; 0 = off; see ccvae.objective.intervention_consistency)")
    o.add_argument("--intervention-batch", type=int, default=16, help="rows of each labelled batch that get an edit "
                   "when --intervention-weight > 0")
    o.add_argument("--intervention-flips", choices=["compatible", "consistent", "all"], default="compatible",
                   help="which edits --intervention-weight trains: compatible skips adding a label that the model keeps "
                        "exclusive with one the face has (never together in the labelled data though chance would "
                        "show them together: a second hair colour); consistent draws it and clears the other "
                        "label first, as the app edits (editing.intervene); all draws any flip as it is")
    o.add_argument("--intervention-precedence", nargs="+", default=[], metavar="LABEL",
                   help="labels, strongest first, each of which wins over the labels exclusive with it that are not "
                        "listed before it: an edit adding it to a face showing only labels it wins over is drawn as it "
                        "is, both latents present, and must read as the added label (as the plain intervention metric "
                        "asks); the reverse edit stays blocked or cleared (ccvae.objective.with_precedence). Not with "
                        "--intervention-flips all, which draws every edit as it is")
    o.add_argument("--intervention-judge", choices=list(objective.JUDGES), default="classifier",
                   help="what an edit must do after decoding and encoding again: read as the new label value "
                        "(classifier) or encode back to the latent value it was given (latent)")
    o.add_argument("--intervention-focus", type=float, default=0.0, metavar="F",
                   help="share of the edits drawn where they miss: each label's edits are drawn with weight "
                        "(1 - F) + F * m_i / mean(m), m_i the label's recent miss rate in the term "
                        "(ccvae.objective.edit_focus; 0 = uniform, 1 = in proportion to the misses)")
    o.add_argument("--intervention-start", type=float, default=0.0,
                   help="epoch (may be fractional) from which --intervention-weight applies; before it the loss is "
                        "Eq. 1 (a late start keeps the prior samples of a plain run and still teaches the decoder the edits)")
    o.add_argument("--residual-emphasis", type=float, default=0.0, metavar="P",
                   help="scale the gradient of the decoder's output at each pixel by its error to the power P, "
                        "normalised to mean 1 over each image, leaving every value (bound, scale, KL) as it is "
                        "(ccvae.distributions.emphasise_residuals; 0 = off): small details the decoder misses, such as "
                        "the synthetic faces' earrings, are learned sooner (README: Residual emphasis)")
    o.add_argument("--residual-emphasis-floor", type=float, default=EMPHASIS_FLOOR, metavar="EPS",
                   help="floor eps under each pixel's error, r^2 = sum_c (x - mean)^2 + eps^2 (default %(default)s): a larger eps "
                        "keeps more of the pull on pixels already nearly right (README: Residual emphasis)")
    o.add_argument("--residual-emphasis-until", type=float, default=None, metavar="EPOCH",
                   help="epoch (may be fractional) at which --residual-emphasis stops (default: it runs to the end)")
    o.add_argument("--oversample", metavar="LABEL=W", type=batches.parse_oversample,
                   help="draw the labelled faces that have LABEL W times as often as the others, with replacement "
                        "(an epoch still has as many labelled batches; p(y) stays the labelled frequencies). On the "
                        "synthetic faces a decoder told every factor draws the earrings on 0.799 of the faces with "
                        "Wearing_Earrings=3 against 0.636 without (README)")
    o.add_argument("--weight-grad", choices=list(objective.WEIGHT_GRADS), default="characteristic", help="gradient of the importance weight (see ccvae.objective)")
    o.add_argument("--seed", type=int, default=0, help="training seed (initialisation, data order, sampling)")
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, required=True, help="run folder: model/, state/, log.jsonl, figures/")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--amp", action="store_true",
                   help="bf16 autocast (CUDA, or a CPU with native bf16; the README's Benchmarks give the measured effect)")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last memory format for images and convolutions (default on; the same maths, "
                        "the layout oneDNN and cuDNN convolve fastest)")
    r.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder")
    r.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    r.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    r.add_argument("--max-minutes", type=float, help="stop training after this many minutes (saved, then evaluated as if finished)")
    r.add_argument("--schedule-minutes", type=float,
                   help="fit the whole schedule into this many minutes of training: the position that drives the "
                        "cosine rate, --intervention-start and --style-kl-warmup is the larger of the epochs done and "
                        "--epochs x minutes elapsed / this, and training ends when it reaches --epochs. A machine "
                        "slower than planned runs fewer epochs of the same schedule (annealed, the term included) "
                        "instead of being cut off mid-schedule by --max-minutes; a faster one runs all --epochs")
    r.add_argument("--no-figures", action="store_true", help="skip the per-epoch figures")
    r.add_argument("--no-eval", action="store_true", help="skip the final test-split evaluation")
    r.add_argument("--fit-style-prior", type=int, default=0, metavar="N",
                   help="when training ends, fit the style latents' sampling prior to q(z_s|x) over N training "
                        "faces (train.fit_prior; generation then draws z_s from it); 0: keep N(0, I) (default: 0)")
    r.add_argument("--eval-limit", type=int, help="evaluate on the first N test images only (default: all)")
    return p.parse_args(argv)


def _setup_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _all_reduce_gradients(model: torch.nn.Module, world: int) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if world > 1 and grads:
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def _shared_seconds(seconds: float, world: int, device: torch.device) -> float:
    """The training time as rank 0 measured it: under torchrun every rank then takes the same
    schedule position and stops at the same step (a rank stopping alone would leave the others
    waiting in the next all-reduce). A single process returns its own reading."""
    if world == 1:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.item()


def _rank_divergence(model: torch.nn.Module) -> float:
    """max |theta_rank - theta_0| over all ranks and parameters: 0.0 when the ranks agree."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def schedule_position(args: argparse.Namespace, epochs_done: float, seconds: float) -> float:
    """Where the schedule stands, in (fractional) epochs: the epochs done, or with --schedule-minutes M
    the larger of that and --epochs * seconds / (60 M), so that the schedule (rate, term, warm-up)
    ends at M minutes of training however fast the machine is. seconds: training time so far
    (kept in the saved state, so a resumed run goes on from the same point)."""
    if not args.schedule_minutes:
        return epochs_done
    return max(epochs_done, args.epochs * seconds / (60 * args.schedule_minutes))


def intervention_weight(args: argparse.Namespace, position: float) -> float:
    """gamma at a (fractional) epoch: 0 before --intervention-start, --intervention-weight from it on.
    A function of the position alone, so a resumed run switches at the same step."""
    return args.intervention_weight if position >= args.intervention_start else 0.0


def residual_emphasis(args: argparse.Namespace, position: float) -> Emphasis:
    """The emphasis at a (fractional) epoch: --residual-emphasis (with its floor) before
    --residual-emphasis-until (or throughout), power 0 from it on. A function of the position alone,
    like the rest."""
    ended = args.residual_emphasis_until is not None and position >= args.residual_emphasis_until
    return Emphasis(0.0 if ended else args.residual_emphasis, args.residual_emphasis_floor)


def style_kl_weight(args: argparse.Namespace, position: float) -> float:
    """beta at a (fractional) epoch: --style-kl-weight * position / --style-kl-warmup during the
    warm-up, --style-kl-weight after it. A function of the position alone, like the rest."""
    if args.style_kl_warmup <= 0 or position >= args.style_kl_warmup:
        return args.style_kl_weight
    return args.style_kl_weight * position / args.style_kl_warmup


def lr_schedule(args: argparse.Namespace):
    """None for a constant rate, else epoch (fractional) -> learning rate: a cosine from --lr at
    the start to --lr * --min-lr-ratio at --epochs. A function of the position alone, so a resumed
    run follows the same curve."""
    if args.lr_schedule == "constant":
        return None
    lo = args.lr * args.min_lr_ratio

    def lr_at(epoch: float) -> float:
        t = min(max(epoch / args.epochs, 0.0), 1.0)
        return lo + 0.5 * (args.lr - lo) * (1 + math.cos(math.pi * t))
    return lr_at


def load_data(args: argparse.Namespace, split: str, limit: int | None):
    from .data import load_dataset

    return load_dataset(args.dataset, split, root=args.root, labels_csv=args.labels_csv, label_names=args.label_names,
                        image_size=args.image_size, seed=args.data_seed, limit=limit)


def main(args: argparse.Namespace) -> int:
    device = default_device("cuda" if args.device == "cuda" and "LOCAL_RANK" in os.environ else args.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    rank, world = _setup_distributed(device)
    is_main = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % world:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the number of ranks ({world})")
    if not 0.0 <= args.sup_frac <= 1.0:
        raise ValueError(f"--sup-frac must be in [0, 1], got {args.sup_frac}")
    check_emphasis(args.residual_emphasis, "--residual-emphasis")
    check_floor(args.residual_emphasis_floor, "--residual-emphasis-floor")
    if args.residual_emphasis_until is not None and not args.residual_emphasis_until >= 0:
        raise ValueError(f"--residual-emphasis-until must be an epoch >= 0, got {args.residual_emphasis_until}")
    if not args.intervention_start >= 0:
        raise ValueError(f"--intervention-start must be an epoch >= 0, got {args.intervention_start}")
    if not args.style_kl_warmup >= 0:
        raise ValueError(f"--style-kl-warmup must be a number of epochs >= 0, got {args.style_kl_warmup}")
    if not args.style_kl_weight >= 0:
        raise ValueError(f"--style-kl-weight must be >= 0, got {args.style_kl_weight}")
    if args.hidden_dim < 1:
        raise ValueError(f"--hidden-dim must be a positive width, got {args.hidden_dim}")
    if args.channels is not None and min(args.channels) < 1:
        raise ValueError(f"--channels must be positive widths, got {args.channels}")
    if args.refine_channels < 0:
        raise ValueError(f"--refine-channels must be 0 (the paper's decoder) or positive, got {args.refine_channels}")
    if not 0.0 <= args.intervention_focus <= 1.0:
        raise ValueError(f"--intervention-focus must lie in [0, 1], got {args.intervention_focus}")
    if args.intervention_precedence and args.intervention_flips == "all":
        raise ValueError("--intervention-precedence changes which edits respect exclusive labels, but "
                         "--intervention-flips all respects none; use compatible or consistent")
    if len(set(args.intervention_precedence)) != len(args.intervention_precedence):
        raise ValueError(f"--intervention-precedence lists a label twice: {args.intervention_precedence}")
    if args.fit_style_prior < 0:
        raise ValueError(f"--fit-style-prior must be a number of training faces >= 0, got {args.fit_style_prior}")
    if args.schedule_minutes is not None and not args.schedule_minutes > 0:
        raise ValueError(f"--schedule-minutes must be a positive number of minutes, got {args.schedule_minutes}")
    out: Path = args.out
    if args.resume and not (out / "state").is_dir():
        raise FileNotFoundError(f"--resume: no saved state in {out / 'state'}")
    if not args.resume and (out / "state").is_dir():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    from .data import semi_supervised

    train_set = load_data(args, "train", args.limit)
    labelled, unlabelled = semi_supervised(train_set, args.sup_frac, seed=args.seed)
    try:
        val_set = load_data(args, "val", args.val_limit)
    except (ValueError, FileNotFoundError):
        val_set = None
    label_names = train_set.label_names
    unknown = [name for name in args.intervention_precedence if name not in label_names]
    if unknown:
        raise ValueError(f"--intervention-precedence: unknown labels {unknown}; the data's labels are {list(label_names)}")

    from .evaluate import exclusive_pairs

    torch.manual_seed(args.seed)
    # label pairs the labelled data never shows together (hair colours): saved with the model,
    # which keeps them exclusive in its edits (editing.intervene) and in the intervention term
    exclusive_labels = exclusive_pairs(labelled.labels, label_names) if len(labelled) else []
    model = CCVAE(label_names=label_names, latent_dim=args.latent_dim, image_size=args.image_size,
                  channels=args.channels, hidden_dim=args.hidden_dim,
                  refine_channels=args.refine_channels, label_gates=args.label_gates,
                  decoder_film=args.decoder_film,
                  likelihood=args.likelihood, likelihood_scale=args.likelihood_scale, learn_scale=not args.fixed_scale,
                  exclusive_labels=exclusive_labels)
    if args.fit_style_prior and model.style_dim == 0:
        raise ValueError(f"--fit-style-prior needs style latents, but --latent-dim {args.latent_dim} equals the "
                         f"number of labels ({model.num_labels})")
    if len(labelled):
        model.set_label_prior(torch.from_numpy(np.asarray(labelled.labels, dtype=np.float32)).mean(0))
    model.to(device)
    channels_last = args.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, args.lr)
    generator = torch.Generator(device=device).manual_seed(args.seed * 7919 + rank)

    counters = {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0}
    if args.resume:
        saved = load_state(out / "state", model=model, optimizer=optimizer, generator=generator)
        counters = saved["counters"]
        for group in optimizer.param_groups:  # --lr on resume sets the rate from here on (e.g. a final, lower one)
            group["lr"] = args.lr  # (with --lr-schedule cosine: the peak the schedule decays from)
    # per label, the edits the intervention term drew and their misses, decayed by EDIT_DECAY a step
    # (they steer --intervention-focus and are logged as intervention_miss_rate)
    edit_stats = torch.tensor(counters.get("edit_stats", [[0.0] * model.num_labels] * 2), device=device)
    if args.compile:
        model.encoder.compile()
        model.decoder.compile()

    lab_weights = (batches.oversample_weights(labelled.labels, label_names, *args.oversample)
                   if args.oversample and len(labelled) else None)
    lab_images = batches.resident(labelled.images, device)
    lab_labels = torch.from_numpy(np.asarray(labelled.labels, dtype=np.float32)).to(lab_images.device) if len(labelled) else None
    # compatible flips never train an edit that adds a label to a face showing one exclusive with it;
    # consistent flips train it with that label cleared first; --intervention-precedence lifts either one way
    exclusive = None
    if args.intervention_flips != "all":
        order = [model.label_index(name) for name in args.intervention_precedence]
        exclusive = objective.with_precedence(model.exclusive, order).to(device)
    unl_images = batches.resident(unlabelled.images, device) if len(unlabelled) else None
    n_lab_batches = math.ceil(len(labelled) / args.batch_size)
    n_unl_batches = math.ceil(len(unlabelled) / args.batch_size) if unl_images is not None else 0
    plan = batches.schedule(n_lab_batches, n_unl_batches)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)
    sync_every = 1 if device.type == "cpu" else 50
    lr_at = lr_schedule(args)
    timed = bool(args.max_minutes or args.schedule_minutes)  # the clock is read only for these

    def elapsed() -> float:  # training seconds so far, the same on every rank (t0: the epoch's start)
        return _shared_seconds(counters["seconds"] + time.time() - t0, world, device)
    shown = val_set if val_set is not None and len(val_set) >= 8 else train_set
    faces = batches.to_float(batches.load(shown.images[:8])).to(device)  # for figures

    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        history = read_history(out) if args.resume else []
        history.append({**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                        "started_at_epoch": counters["epoch"] + counters["batch"] / max(len(plan), 1)})
        (out / ARGS).write_text(json.dumps(history, indent=2, default=str))
        print(f"training on {device} x{world}: {len(labelled)} labelled + {len(unlabelled)} unlabelled images, "
              f"labels {label_names}, {len(plan)} batches/epoch", file=sys.stderr)

    def checkpoint() -> None:
        counters["edit_stats"] = edit_stats.tolist()
        if is_main:
            save_state(out / "state", model=model, optimizer=optimizer, generator=generator,
                       counters=counters, args={k: str(v) for k, v in vars(args).items()})

    interrupted = {"flag": False}

    def on_sigint(signum, frame):
        interrupted["flag"] = True
    previous_handler = signal.signal(signal.SIGINT, on_sigint) if is_main else None

    stop_reason = None
    try:
        while counters["epoch"] < args.epochs and stop_reason is None:
            epoch = counters["epoch"]
            lab_order = (None if not len(labelled) else batches.epoch_order(len(labelled), args.seed, 2 * epoch)
                         if lab_weights is None else batches.weighted_epoch_order(lab_weights, args.seed, 2 * epoch))
            unl_order = batches.epoch_order(len(unlabelled), args.seed, 2 * epoch + 1) if n_unl_batches else None
            lab_seen, unl_seen = sum(plan[:counters["batch"]]), counters["batch"] - sum(plan[:counters["batch"]])
            sums: dict[str, torch.Tensor] = {}  # summed on the device, read once per epoch
            counts: dict[str, int] = {}
            finite = torch.ones((), dtype=torch.bool, device=device)
            t0 = time.time()
            bar = tqdm(range(counters["batch"], len(plan)), desc=f"epoch {epoch + 1}/{args.epochs}",
                       disable=not is_main, leave=False, dynamic_ncols=True)
            model.train()
            seconds = elapsed() if timed else counters["seconds"]  # read again after every sync_every steps
            position = schedule_position(args, epoch + counters["batch"] / len(plan), seconds)
            for b in bar:
                # of the step being taken, in (fractional) epochs
                position = schedule_position(args, epoch + b / len(plan), seconds)
                is_labelled = plan[b]
                order, seen = (lab_order, lab_seen) if is_labelled else (unl_order, unl_seen)
                idx = order[seen * args.batch_size:(seen + 1) * args.batch_size][rank::world]
                if is_labelled:
                    lab_seen += 1
                    x = batches.batch_to_device(lab_images, idx, device, channels_last=channels_last)
                    y = lab_labels[idx.to(lab_labels.device)].to(device)
                    gamma = intervention_weight(args, position)
                    focus = (objective.edit_focus(edit_stats, args.intervention_focus)
                             if gamma and args.intervention_focus else None)
                    with autocast:
                        result = objective.supervised(model, x, y, k=args.k, generator=generator,
                                                      weight_grad=args.weight_grad,
                                                      classification_weight=args.classification_weight,
                                                      style_kl_weight=style_kl_weight(args, position),
                                                      intervention_weight=gamma,
                                                      intervention_batch=args.intervention_batch,
                                                      intervention_exclusive=exclusive,
                                                      intervention_clear=args.intervention_flips == "consistent",
                                                      intervention_judge=args.intervention_judge,
                                                      intervention_focus=focus,
                                                      emphasis=residual_emphasis(args, position))
                    if result.edits is not None:
                        edit_stats.mul_(EDIT_DECAY).add_(result.edits)
                else:
                    unl_seen += 1
                    x = batches.batch_to_device(unl_images, idx, device, channels_last=channels_last)
                    with autocast:
                        result = objective.unsupervised(model, x, generator=generator, style_kl_weight=style_kl_weight(args, position),
                                                        emphasis=residual_emphasis(args, position))
                kind = "sup" if is_labelled else "unsup"
                finite = finite & torch.isfinite(result.loss.detach())
                # Reading a GPU value waits for the GPU: check the loss every step on the CPU,
                # every sync_every steps (and at the epoch's end) on CUDA. A NaN step in between
                # can touch the weights in memory, never the saved checkpoint.
                if (b + 1) % sync_every == 0 or b + 1 == len(plan):
                    if not bool(finite):
                        raise TrainingStopped(
                            f"the loss became {result.loss.item()} at epoch {epoch + 1}, batch {b + 1} (or up to "
                            f"{sync_every - 1} batches before; last: {'labelled' if is_labelled else 'unlabelled'}); "
                            f"nothing was saved after the last good checkpoint in {out / 'state'} (epoch "
                            f"{counters['epoch']}). Try a lower --lr or a larger --likelihood-scale.")
                    if is_main:
                        bar.set_postfix(loss=f"{result.loss.item():.4g}",
                                        acc=f"{float(sums.get('sup_accuracy', 0)) / max(counts.get('sup_accuracy', 1), 1):.3f}")
                if lr_at is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(position)
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                _all_reduce_gradients(model, world)
                optimizer.step()
                counters["batch"] = b + 1
                counters["step"] += 1
                for key, value in [("loss", result.loss.detach()), *result.terms.items()]:
                    sums[f"{kind}_{key}"] = sums.get(f"{kind}_{key}", 0.0) + value
                    counts[f"{kind}_{key}"] = counts.get(f"{kind}_{key}", 0) + 1
                if timed and ((b + 1) % sync_every == 0 or b + 1 == len(plan)):
                    seconds = elapsed()
                    done = epoch + (b + 1) / len(plan)  # epochs done, with this batch
                    if args.max_minutes and seconds > 60 * args.max_minutes:
                        stop_reason = f"time budget of {args.max_minutes} minutes reached"
                    elif (args.schedule_minutes and (epoch + 1 < args.epochs or b + 1 < len(plan))
                          and schedule_position(args, done, seconds) >= args.epochs):
                        stop_reason = f"the schedule of {args.schedule_minutes} minutes ended"
                    if stop_reason is not None:  # where it stopped, built only then
                        stop_reason += (f" in epoch {epoch + 1} at batch {b + 1} of {len(plan)}: "
                                        f"{done:.2f} of {args.epochs} epochs done")
                if stop_reason is not None:
                    counters["epoch"] = epoch  # a partial epoch: the log and card say how far it went
                    break
                if interrupted["flag"]:
                    counters["seconds"] += time.time() - t0
                    checkpoint()
                    print(f"\ninterrupted: saved the run at epoch {epoch + 1}, batch {b + 1} in {out / 'state'}; "
                          f"continue with --resume", file=sys.stderr)
                    return 130
            bar.close()
            counters["seconds"] += time.time() - t0
            if stop_reason is None:
                counters["epoch"] += 1
                counters["batch"] = 0
            record = {"epoch": counters["epoch"] + counters["batch"] / len(plan), "step": counters["step"], "seconds": round(counters["seconds"], 1),
                      **{k: float(sums[k]) / counts[k] for k in sums}, "lr": optimizer.param_groups[0]["lr"]}
            if args.schedule_minutes:  # where the epoch's last step stood in the schedule
                record["schedule_position"] = position
            if bool(edit_stats[0].any()):  # each label's recent miss rate in the term (1 - q(y_i = v | z'_i))
                rates = (edit_stats[1] / edit_stats[0].clamp_min(1e-9)).tolist()
                record["intervention_miss_rate"] = {n: round(r, 4) for n, r in zip(model.label_names, rates)}
            if args.style_kl_warmup > 0:  # the weight the epoch's last step used
                record["style_kl_weight"] = style_kl_weight(args, position)
            if world > 1:
                record["rank_max_abs_diff"] = _rank_divergence(model)
            if is_main:
                if val_set is not None and len(val_set):
                    record.update(validate(model, val_set))
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                               if k in ("epoch", "seconds", "sup_loss", "unsup_loss", "sup_accuracy", "val_accuracy",
                                        "val_psnr", "sup_likelihood_scale")), file=sys.stderr)
                if not args.no_figures:
                    figures.epoch_figures(model, faces, out / "figures", counters["epoch"])
                write_model(model, out, args, counters, faces, metrics=None)
                checkpoint()
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    if stop_reason and is_main:
        print(f"stopped: {stop_reason}", file=sys.stderr)
    if is_main and args.fit_style_prior:
        from .fit_prior import describe, fit_style_prior

        print(describe(fit_style_prior(model, train_set.images, n=args.fit_style_prior, seed=args.seed)), file=sys.stderr)
        if args.no_eval:  # otherwise written with the metrics below
            write_model(model, out, args, counters, faces, metrics=None)
    if is_main and not args.no_eval:
        from . import evaluate

        metrics = evaluate.evaluate(model, args.dataset, root=args.root, labels_csv=args.labels_csv,
                                    image_size=args.image_size, data_seed=args.data_seed, limit=args.eval_limit)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(evaluate.format_table(metrics), file=sys.stderr)
        write_model(model, out, args, counters, faces, metrics=metrics)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


@torch.no_grad()
def validate(model: CCVAE, data, batch_size: int = 500) -> dict[str, float]:
    """Accuracy from the posterior mean, and reconstruction PSNR, on (up to) the given set."""
    model.eval()
    correct, total, sq = 0.0, 0, 0.0
    images = batches.load(data.images)
    labels = torch.from_numpy(np.asarray(data.labels, dtype=np.float32))
    for start in range(0, len(data), batch_size):
        x = batches.to_float(images[start:start + batch_size]).to(model.device)
        z = editing.encode(model, x)
        y = labels[start:start + batch_size].to(model.device)
        known = y >= 0
        correct += ((editing.label_probs(model, z) > 0.5).float() == y)[known].sum().item()
        total += known.sum().item()
        sq += (editing.decode(model, z) - x).square().mean((1, 2, 3)).sum().item()
    mse = sq / len(data)
    model.train()
    return {"val_accuracy": correct / max(total, 1), "val_psnr": 10 * math.log10(1 / max(mse, 1e-12))}


def write_model(model: CCVAE, out: Path, args: argparse.Namespace, counters: dict, faces: torch.Tensor,
                metrics: dict | None) -> None:
    """The run's model folder in the Hub layout, with its model card and a traversal figure."""
    def write(tmp: Path) -> None:
        from ccvae import hub

        hub.save(model, tmp)
        figures.traversal_figure(model, faces[:2]).save(tmp / "traversal.png")
        modelcard.write(tmp, model=model, args=args, counters=counters, metrics=metrics,
                        history=read_history(out) or None)

    replace_dir(out / "model", write)


def cli(argv=None) -> int:
    args = parse_args(argv)
    try:
        return main(args)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
