"""Semi-supervised CCVAE training: `python -m train --recipe synthetic-faces --out runs/NAME`.

A run is a recipe (train/recipes/NAME.json, every setting of train.config.TrainConfig); a flag
overrides one setting, and the run folder keeps the resolved settings (train_config.json).
One epoch is one pass over the unlabelled images, and every step takes a labelled batch beside
the unlabelled one, cycling the labelled set, so the labelled terms weigh the same at every
labelled fraction f (with no unlabelled images: one pass over the labelled ones). The labelled
batch contributes Eq. 1 (ccvae.objective.supervised) and the recipe's training aids (train.aids),
the unlabelled one the ELBO with labels marginalised (ccvae.objective.unsupervised). Partly
labelled rows (unknown cells, as a folder's CSV leaves them) join the labelled stream and take
ccvae.objective.partially_supervised: Eq. 1 over their known labels, the others enumerated.
Every epoch-based setting is a fraction of the run (intervention_from), so a short run keeps
every term it asks for. After every epoch: a JSONL log line, figures
drawn with ccvae.editing, the model folder (Hub layout) and the full training state, both
replaced atomically. Works unchanged under torchrun: every rank takes a slice of each batch and
gradients are averaged.
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

from ccvae import CCVAE, default_device, objective

from . import aids, batches, figures, modelcard
from .console import one_line_warnings
from .config import (CONFIG_NAME, SETTING_FLAGS, TrainConfig, flag_dest, flag_help, label_list, load_recipe, override,
                     parse_setting, save)
from .state import load_state, replace_dir, save_state

EDIT_DECAY = 0.99  # per labelled step: the intervention term's edit counts forget with a ~100-step window
INTERVENTION_BATCH = 16  # rows of each labelled batch that get an edit when the intervention term is on
MIN_LR_RATIO = 0.05  # the cosine schedule ends at this fraction of the peak rate
MAJORITY_MARGIN = 0.005  # validation accuracy within this of the majority guess is "at" it



class TrainingStopped(Exception):
    """A run ended early on purpose (NaN guard): the message says why; exit status 1."""


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam over the trainable parameters, fused (one kernel for all of them, the same update rule)."""
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, fused=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", help="a recipe name in train/recipes/ (synthetic-faces, celeba) or the path of a "
                                    "recipe .json (default: the defaults of train.config.TrainConfig)")
    s = p.add_argument_group("settings (each overrides the recipe's)")
    for flag, spec in SETTING_FLAGS.items():
        s.add_argument(f"--{flag}", default=argparse.SUPPRESS, **{**spec, "help": flag_help(flag)})
    s.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                   help="override any other setting of train.config.TrainConfig (VALUE as JSON), e.g. "
                        "--set residual_emphasis=0.5; may repeat; --list-settings names them all")
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, required=True, help="run folder: model/, state/, log.jsonl, figures/")
    r.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped, with its saved settings")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    r.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    r.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA, or a CPU with native bf16)")
    r.add_argument("--compile", action="store_true", help="torch.compile the encoder and decoder")
    r.add_argument("--no-figures", action="store_true", help="skip the per-epoch figures")
    r.add_argument("--no-eval", action="store_true", help="skip the final test-split evaluation")
    r.add_argument("--list-settings", action=ListSettings, help="list every setting with its default and exit")
    return p.parse_args(argv)


class ListSettings(argparse.Action):
    """--list-settings: every setting --set takes, with its default and meaning, then exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from .config import describe_settings

        print(describe_settings())
        parser.exit()


def overrides(args: argparse.Namespace) -> dict:
    """The settings the command line sets: its setting flags, then its --set pairs."""
    given = {flag_dest(flag): getattr(args, flag_dest(flag)) for flag in SETTING_FLAGS if hasattr(args, flag_dest(flag))}
    if "label_names" in given:
        given["label_names"] = label_list(given["label_names"])
    for text in args.settings:
        name, value = parse_setting(text)
        given[name] = value
    return given


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the recipe (or, with --resume, the run's saved settings) with the
    command line's overrides."""
    if args.resume:
        if args.recipe:
            raise ValueError("--resume continues a run with the settings saved in its folder; leave out --recipe "
                             "(a flag still overrides one setting)")
        saved = args.out / CONFIG_NAME
        if not saved.is_file():
            raise FileNotFoundError(f"--resume: {args.out} holds no {CONFIG_NAME}; not a run of python -m train")
        base = load_recipe(saved, saved_run=True)
    else:
        base = load_recipe(args.recipe) if args.recipe else TrainConfig()
    return override(base, overrides(args))


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


def _rank_divergence(model: torch.nn.Module) -> float:
    """max |theta_rank - theta_0| over all ranks and parameters: 0.0 when the ranks agree."""
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, 0)
    diff = (flat - reference).abs().max()
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return diff.item()


def lr_at(config: TrainConfig, epoch: float) -> float:
    """The learning rate at a (fractional) epoch: a cosine from config.lr to MIN_LR_RATIO of it
    at config.epochs. A function of the position alone, so a resumed run follows the same curve."""
    lo = config.lr * MIN_LR_RATIO
    t = min(max(epoch / config.epochs, 0.0), 1.0)
    return lo + 0.5 * (config.lr - lo) * (1 + math.cos(math.pi * t))


def intervention_weight(config: TrainConfig, epoch: float) -> float:
    """gamma at a (fractional) epoch: 0 before intervention_from of the run, intervention_weight from there."""
    return config.intervention_weight if epoch >= config.intervention_from * config.epochs else 0.0


def load_data(config: TrainConfig, split: str, limit: int | None):
    from .data import load_dataset

    return load_dataset(config.dataset, split, root=config.root, labels_csv=config.labels_csv,
                        label_names=config.label_names, image_size=config.image_size, limit=limit,
                        align=config.align)


def main(config: TrainConfig, args: argparse.Namespace) -> int:
    """Train `config` into the run folder args.out (args: the command line's run options)."""
    device = default_device("cuda" if args.device == "cuda" and "LOCAL_RANK" in os.environ else args.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    rank, world = _setup_distributed(device)
    is_main = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of ranks ({world})")
    out: Path = args.out
    if args.resume and not (out / "state").is_dir():
        raise FileNotFoundError(f"--resume: no saved state in {out / 'state'}")
    if not args.resume and (out / "state").is_dir():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    from .data import framing, semi_supervised
    from .data.labels import exclusive_pairs, label_counts

    train_set = load_data(config, "train", config.limit)
    labelled, unlabelled = semi_supervised(train_set, config.sup_frac, seed=config.seed)
    try:
        val_set = load_data(config, "val", config.val_limit) if config.val_limit else None
    except (ValueError, FileNotFoundError):
        val_set = None
    label_names = train_set.label_names
    unknown = [name for name in config.intervention_precedence if name not in label_names]
    if unknown:
        raise ValueError(f"intervention_precedence: unknown labels {unknown}; the data's labels are {list(label_names)}")

    torch.manual_seed(config.seed)
    # label pairs the labelled data never shows together (hair colours): saved with the model,
    # which keeps them exclusive in its edits (editing.intervene) and in the intervention term
    exclusive_labels = exclusive_pairs(labelled.labels, label_names) if len(labelled) else []
    model = CCVAE(label_names=label_names, latent_dim=config.latent_dim, characteristic_dim=config.characteristic_dim,
                  image_size=config.image_size,
                  channels=config.channels, hidden_dim=config.hidden_dim, label_gates=config.label_gates,
                  decoder_film=config.decoder_film, likelihood=config.likelihood,
                  likelihood_scale=config.likelihood_scale, exclusive_labels=exclusive_labels,
                  framing=framing(config.dataset, align=config.align))
    if config.fit_style_prior and model.style_dim == 0:
        raise ValueError(f"fit_style_prior needs style latents, but latent_dim {config.latent_dim} leaves none after "
                         f"{model.num_labels} characteristic latents of {model.characteristic_dim}")
    if len(labelled):  # p(y_i = 1): the frequency among the rows that know label i
        y_known = np.asarray(labelled.labels)
        if (y_known >= 0).all():
            model.set_label_prior(torch.from_numpy(y_known.astype(np.float32)).mean(0))
        else:
            known = (y_known >= 0).sum(0)
            model.set_label_prior(torch.from_numpy(np.where(known > 0, (y_known == 1).sum(0) / np.maximum(known, 1),
                                                            0.5).astype(np.float32)))
    model.to(device).to(memory_format=torch.channels_last)  # the layout oneDNN and cuDNN convolve fastest
    optimizer = make_optimizer(model, config.lr)
    generator = torch.Generator(device=device).manual_seed(config.seed * 7919 + rank)

    counters = {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0, "recipe": args.recipe}
    if args.resume:
        counters = load_state(out / "state", model=model, optimizer=optimizer, generator=generator)["counters"]
    # per label, the edits the intervention term drew and their misses, decayed by EDIT_DECAY a step
    # (they steer intervention_focus and are logged as intervention_miss_rate)
    edit_stats = torch.tensor(counters.get("edit_stats", [[0.0] * model.num_labels] * 2), device=device)
    if args.compile:
        model.encoder.compile()
        model.decoder.compile()

    lab_images = batches.resident(labelled.images, device)
    lab_labels = torch.from_numpy(np.asarray(labelled.labels, dtype=np.float32)).to(lab_images.device) if len(labelled) else None
    # rows with unknown cells (a folder's partly labelled rows): Eq. 1 over the known labels, the
    # others enumerated (objective.partially_supervised); fully labelled data keeps objective.supervised
    is_partial = len(labelled) > 0 and bool((np.asarray(labelled.labels) < 0).any())
    majority = majority_accuracy(labelled.labels, val_set.labels) if len(labelled) and val_set is not None else None
    # an intervention edit adding a label clears the labels exclusive with it first, as the app
    # edits; intervention_precedence lets listed labels win over their partners instead
    order = [model.label_index(name) for name in config.intervention_precedence]
    exclusive = aids.with_precedence(model.exclusive, order).to(device)
    log_likelihood = aids.emphasised_log_likelihood(model, aids.Emphasis(config.residual_emphasis,
                                                                         config.residual_emphasis_floor))
    unl_images = batches.resident(unlabelled.images, device) if len(unlabelled) else None
    # One epoch is one pass over the unlabelled images; each of its steps also takes a labelled
    # batch, cycling the labelled set (batches.cycled_batch), so the labelled terms get a batch a
    # step at every f. With no unlabelled images an epoch is one pass over the labelled ones.
    is_semi = len(labelled) > 0 and unl_images is not None
    steps = batches.steps_per_epoch(len(labelled), len(unlabelled) if unl_images is not None else 0, config.batch_size)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp)
    sync_every = 1 if device.type == "cpu" else 50
    shown = val_set if val_set is not None and len(val_set) >= 8 else train_set
    faces = batches.to_float(batches.load(shown.images[:8])).to(device)  # for figures

    data_counts = {**label_counts(labelled.labels, len(labelled)), "unreadable": len(train_set.skipped),
                   "images": len(train_set)}
    data_counts["unlabelled"] += len(unlabelled)
    data_counts["labelled_cells"] = (float((np.asarray(labelled.labels) >= 0).sum()) / (len(train_set) * len(label_names))
                                     if len(labelled) and len(train_set) else 0.0)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        save(config, out / CONFIG_NAME)
        print(f"training images ({config.dataset}, train split): {data_counts['labelled']} labelled, "
              f"{data_counts['partly_labelled']} partly labelled, {data_counts['unlabelled']} unlabelled, "
              f"{data_counts['unreadable']} unreadable (skipped{skipped_names(train_set.skipped)}); "
              f"{data_counts['labelled_cells']:.1%} of the label "
              f"cells known" + (f"; {len(val_set)} validation images" if val_set is not None else ""), file=sys.stderr)
        print(f"training on {device} x{world}: labels {label_names}, {steps} steps/epoch"
              + (" (a labelled and an unlabelled batch each)" if is_semi else ""), file=sys.stderr)

    def labelled_step(x: torch.Tensor, y: torch.Tensor, position: float) -> objective.Objective:
        """Eq. 1 plus the recipe's training aids (train/aids.py) on one labelled batch."""
        bound = objective.partially_supervised if is_partial else objective.supervised
        result = bound(model, x, y, k=config.k, generator=generator, log_likelihood=log_likelihood)
        if config.classification_weight:
            result.loss = result.loss - config.classification_weight * result.log_qyx.mean()
        gamma = intervention_weight(config, position)
        if gamma:
            focus = aids.edit_focus(edit_stats, config.intervention_focus) if config.intervention_focus else None
            b = INTERVENTION_BATCH
            y_edit = aids.fill_unknown(model, result.z[:b], y[:b])  # an unknown label: as the classifier reads it
            value, label = aids.intervention_edits(model, result.z[:b], y_edit, generator=generator,
                                                   exclusive=exclusive, focus=focus)
            result.loss = result.loss - gamma * value.mean()
            miss = 1 - value.detach().float().exp()  # (b,): 1 - q(y_i = v | z'_i)
            edit_stats.mul_(EDIT_DECAY)
            edit_stats[0].index_add_(0, label, torch.ones_like(miss))
            edit_stats[1].index_add_(0, label, miss)
            result.terms["intervention_accuracy"] = (value.detach() > -math.log(2)).float().mean()
        return result

    def checkpoint() -> None:
        counters["edit_stats"] = edit_stats.tolist()
        if is_main:
            save_state(out / "state", model=model, optimizer=optimizer, generator=generator,
                       counters=counters, args=to_strings(config, args))

    interrupted = {"flag": False}
    was_at_majority = False  # the note that validation sits at the majority guess: once, then every 10th epoch

    def on_sigint(signum, frame):
        interrupted["flag"] = True
    previous_handler = signal.signal(signal.SIGINT, on_sigint) if is_main else None

    try:
        while counters["epoch"] < config.epochs:
            epoch = counters["epoch"]
            lab_order = batches.epoch_order(len(labelled), config.seed, 2 * epoch) if len(labelled) else None
            unl_order = batches.epoch_order(len(unlabelled), config.seed, 2 * epoch + 1) if unl_images is not None else None
            sums: dict[str, torch.Tensor] = {}  # summed on the device, read once per epoch
            counts: dict[str, int] = {}
            finite = torch.ones((), dtype=torch.bool, device=device)
            t0 = time.time()
            bar = tqdm(range(counters["batch"], steps), desc=f"epoch {epoch + 1}/{config.epochs}",
                       disable=not is_main, leave=False, dynamic_ncols=True)
            model.train()
            for b in bar:
                position = epoch + b / steps  # of the step being taken, in (fractional) epochs
                parts: list[tuple[str, objective.Objective]] = []
                if len(labelled):
                    idx = (batches.cycled_batch(len(labelled), config.batch_size, config.seed, epoch * steps + b)
                           if is_semi else lab_order[b * config.batch_size:(b + 1) * config.batch_size])[rank::world]
                    x = batches.batch_to_device(lab_images, idx, device, channels_last=True)
                    y = lab_labels[idx.to(lab_labels.device)].to(device)
                    with autocast:
                        parts.append(("sup", labelled_step(x, y, position)))
                if unl_images is not None:
                    idx = unl_order[b * config.batch_size:(b + 1) * config.batch_size][rank::world]
                    x = batches.batch_to_device(unl_images, idx, device, channels_last=True)
                    with autocast:
                        parts.append(("unsup", objective.unsupervised(model, x, generator=generator,
                                                                      log_likelihood=log_likelihood)))
                loss = sum(result.loss for _, result in parts)
                finite = finite & torch.isfinite(loss.detach())
                # Reading a GPU value waits for the GPU: check the loss every step on the CPU,
                # every sync_every steps (and at the epoch's end) on CUDA. A NaN step in between
                # can touch the weights in memory, never the saved checkpoint.
                if (b + 1) % sync_every == 0 or b + 1 == steps:
                    if not bool(finite):
                        raise TrainingStopped(
                            f"the loss became {loss.item()} at epoch {epoch + 1}, step {b + 1} (or up to "
                            f"{sync_every - 1} steps before; {' + '.join(f'{k} {r.loss.item():.4g}' for k, r in parts)}); "
                            f"nothing was saved after the last good checkpoint in {out / 'state'} (epoch "
                            f"{counters['epoch']}). Try a lower --lr.")
                    if is_main:
                        bar.set_postfix(loss=f"{loss.item():.4g}",
                                        acc=f"{float(sums.get('sup_accuracy', 0)) / max(counts.get('sup_accuracy', 1), 1):.3f}")
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(config, position)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                _all_reduce_gradients(model, world)
                optimizer.step()
                counters["batch"] = b + 1
                counters["step"] += 1
                for kind, result in parts:
                    for key, value in [("loss", result.loss.detach()), *result.terms.items()]:
                        sums[f"{kind}_{key}"] = sums.get(f"{kind}_{key}", 0.0) + value
                        counts[f"{kind}_{key}"] = counts.get(f"{kind}_{key}", 0) + 1
                if interrupted["flag"]:
                    counters["seconds"] += time.time() - t0
                    checkpoint()
                    print(f"\ninterrupted: saved the run at epoch {epoch + 1}, step {b + 1} in {out / 'state'}; "
                          f"continue with --resume", file=sys.stderr)
                    return 130
            bar.close()
            counters["seconds"] += time.time() - t0
            counters["epoch"] += 1
            counters["batch"] = 0
            record = {"epoch": counters["epoch"], "step": counters["step"], "seconds": round(counters["seconds"], 1),
                      **{k: float(sums[k]) / counts[k] for k in sums}, "lr": optimizer.param_groups[0]["lr"]}
            if bool(edit_stats[0].any()):  # each label's recent miss rate in the term (1 - q(y_i = v | z'_i))
                rates = (edit_stats[1] / edit_stats[0].clamp_min(1e-9)).tolist()
                record["intervention_miss_rate"] = {n: round(r, 4) for n, r in zip(model.label_names, rates)}
            if world > 1:
                record["rank_max_abs_diff"] = _rank_divergence(model)
            if is_main:
                if val_set is not None and len(val_set):
                    record.update(validate(model, val_set))
                    if majority is not None:
                        record["val_majority_accuracy"] = majority
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                               if k in ("epoch", "seconds", "sup_loss", "unsup_loss", "sup_accuracy", "val_accuracy",
                                        "val_psnr", "sup_likelihood_scale")), file=sys.stderr)
                at_majority = majority is not None and record["val_accuracy"] <= majority + MAJORITY_MARGIN
                if at_majority and (counters["epoch"] == 1 or not was_at_majority or counters["epoch"] % 10 == 0):
                    print(f"note: validation accuracy {record['val_accuracy']:.3f} is at the majority guess "
                          f"({majority:.3f}, every label at its commoner value): the classifier has not read the "
                          "labels yet; with few images give more epochs (README, Training)", file=sys.stderr)
                was_at_majority = at_majority
                if not args.no_figures:
                    figures.epoch_figures(model, faces, out / "figures", counters["epoch"])
                write_model(model, out, config, counters, faces, metrics=None, data=data_counts)
                checkpoint()
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)

    if is_main:
        heldout_error(model, config, val_set)
        if config.fit_style_prior:
            from .fit_prior import fit_after_training

            counters["style_prior_faces"] = fit_after_training(model, config, train_set, labelled)
        metrics = None
        if not args.no_eval:
            from . import evaluate

            metrics = evaluate.evaluate(model, config.dataset, root=config.root, labels_csv=config.labels_csv,
                                        image_size=config.image_size, limit=config.eval_limit)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            print(evaluate.format_table(metrics), file=sys.stderr)
            if evaluate.noise_note(metrics):
                print(evaluate.noise_note(metrics), file=sys.stderr)
        write_model(model, out, config, counters, faces, metrics=metrics, data=data_counts)
        print(next_steps(out, config), file=sys.stderr)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


def skipped_names(skipped: list[tuple[str, str]], shown: int = 5) -> str:
    """': a.png, b.jpg ...' naming the first skipped files, '' when none was skipped."""
    if not skipped:
        return ""
    return ": " + ", ".join(f for f, _ in skipped[:shown]) + (f" and {len(skipped) - shown} more" if len(skipped) > shown else "")


def majority_accuracy(train_labels: np.ndarray, val_labels: np.ndarray | None) -> float | None:
    """The validation accuracy of guessing every label's commoner training value, averaged over
    labels as val_accuracy is (cells -1 = unknown left out); None without validation labels."""
    if val_labels is None or not len(val_labels):
        return None
    y, v = np.asarray(train_labels), np.asarray(val_labels)
    if not (v >= 0).any():
        return None
    guess = (y == 1).sum(0) > (y == 0).sum(0)  # (L,)
    known = (v >= 0).sum(0)
    hits = ((v == guess.astype(v.dtype)) & (v >= 0)).sum(0)
    return float((hits / np.maximum(known, 1)).mean())


def next_steps(out: Path, config: TrainConfig) -> str:
    """Where the model went and the commands that evaluate, open and publish it."""
    return (f"the model is in {out / 'model'} (give the run folder {out} wherever a model is asked for). Next:\n"
            f"  python -m train.evaluate {out}\n"
            f"  python app.py --checkpoint {out}\n"
            f"  python -m train.publish {out} --repo-id USER/NAME --dry-run DIR   # lists what would be uploaded")


def heldout_error(model: CCVAE, config: TrainConfig, val_set) -> None:
    """Store the distribution of the reconstruction error on held-out images in the model's config
    (`ccvae.photos.fit_reconstruction_error`), against which the app finds an upload out of
    domain: the validation images, or the first test images when there are too few of them."""
    from ccvae.photos import MIN_HELD_OUT, fit_reconstruction_error

    heldout, split = val_set, "validation"
    if heldout is None or len(heldout) < MIN_HELD_OUT:
        try:
            heldout, split = load_data(config, "test", 1000), "test"
        except (ValueError, FileNotFoundError):
            heldout = None
    if heldout is None or len(heldout) < MIN_HELD_OUT:
        print(f"note: fewer than {MIN_HELD_OUT} held-out images; the model stores no reconstruction-error "
              "distribution, so the app cannot say when an upload is far from its training images", file=sys.stderr)
        return
    stats = fit_reconstruction_error(model, heldout.images, description=f"{config.dataset}, {split} split, "
                                                                           f"{len(heldout)} images")
    print(f"held-out reconstruction error (MSE): p50 {stats['p50']:.4g}, p99 {stats['p99']:.4g}", file=sys.stderr)


def to_strings(config: TrainConfig, args: argparse.Namespace) -> dict:
    """The settings and run options as JSON-ready values (kept in the saved state)."""
    from .config import to_dict

    run = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
           if k in ("out", "device", "threads", "amp", "compile")}
    return {**to_dict(config), **run}


@torch.no_grad()
def validate(model: CCVAE, data, batch_size: int = 500) -> dict[str, float]:
    """Accuracy from the posterior mean, and reconstruction PSNR, on (up to) the given set."""
    from .evaluate import classification_and_reconstruction

    model.eval()
    m = classification_and_reconstruction(model, data.images, data.labels, batch_size=batch_size)
    model.train()
    return {"val_accuracy": m["mean_accuracy"], "val_psnr": m["psnr"]}


def write_model(model: CCVAE, out: Path, config: TrainConfig, counters: dict, faces: torch.Tensor,
                metrics: dict | None, data: dict | None = None) -> None:
    """The run's model folder in the Hub layout, with its settings, model card, a traversal figure
    and, once evaluated, its metrics."""
    def write(tmp: Path) -> None:
        from ccvae import hub

        hub.save(model, tmp)
        save(config, tmp / CONFIG_NAME)
        figures.traversal_figure(model, faces[:2]).save(tmp / "traversal.png")
        modelcard.write(tmp, model=model, config=config, counters=counters, metrics=metrics, data=data)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))

    replace_dir(out / "model", write)


def cli(argv=None) -> int:
    args = parse_args(argv)
    one_line_warnings()
    try:
        return main(resolve_config(args), args)
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
