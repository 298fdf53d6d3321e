"""Evaluate a trained CCVAE: `python -m train.evaluate RUN_OR_MODEL [--json FILE]`.

RUN_OR_MODEL is a training run's folder, its model/ folder or a Hub id. The dataset and, for a
folder or CelebA, its paths default to those of the model's train_config.json. On the test split
of any dataset: label accuracy from the posterior mean of z_c (the paper's metric), with its
standard error and a warning under NOISY_BELOW images, and the reconstruction PSNR/MSE. On the synthetic faces, where the truth is known, also
the ground-truth metrics of `train.groundtruth` (interventions, conditional generation and
diversity, judged by an independent oracle).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ccvae import CCVAE, CheckpointError, default_device, editing

from . import batches
from .console import one_line_warnings

from .groundtruth import DEFAULT_ORACLE


@torch.no_grad()
def classification_and_reconstruction(model: CCVAE, images: np.ndarray, labels: np.ndarray, *,
                                      batch_size: int = 500) -> dict:
    correct = np.zeros(model.num_labels)
    known = np.zeros(model.num_labels)
    per_image = []  # each image's accuracy over its known labels (for the standard error)
    sq = 0.0
    for start in range(0, len(images), batch_size):
        x = batches.to_float(batches.load(images[start:start + batch_size])).to(model.device)
        y = torch.from_numpy(np.asarray(labels[start:start + batch_size], dtype=np.float32)).to(model.device)
        z = editing.encode(model, x)
        hit = ((editing.label_probs(model, z) > 0.5).float() == y) & (y >= 0)
        correct += hit.sum(0).cpu().numpy()
        known += (y >= 0).sum(0).cpu().numpy()
        n_known = (y >= 0).sum(1)
        per_image += (hit.sum(1) / n_known.clamp_min(1))[n_known > 0].tolist()
        sq += (editing.decode(model, z) - x).square().mean((1, 2, 3)).sum().item()
    per_label = correct / np.maximum(known, 1)
    mse = sq / len(images)
    se = float(np.std(per_image, ddof=1) / math.sqrt(len(per_image))) if len(per_image) > 1 else float("nan")
    return {
        "mean_accuracy": float(per_label.mean()),
        "mean_accuracy_se": se,  # standard error of the mean accuracy over the test images
        "per_label_accuracy": dict(zip(model.label_names, map(float, per_label))),
        "mse": mse,
        "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "num_test_images": int(len(images)),
    }


def evaluate(model: CCVAE, dataset: str, *, root=None, labels_csv=None, image_size: int = 64,
             limit: int | None = None, oracle_path: Path | None = DEFAULT_ORACLE, n_oracle: int = 500) -> dict:
    from .data import load_dataset

    model.eval()
    test = load_dataset(dataset, "test", root=root, labels_csv=labels_csv, label_names=model.label_names,
                        image_size=image_size, limit=limit)
    metrics = classification_and_reconstruction(model, test.images, test.labels)
    if dataset == "synthetic" and oracle_path is not None:
        from .groundtruth import oracle_metrics
        from .oracle import load_oracle

        oracle = load_oracle(oracle_path).to(model.device).eval()
        metrics.update(oracle_metrics(model, oracle, test.images, n=n_oracle, labels=test.labels))
        from .factor_reader import DEFAULT_READER, load_factor_reader
        from .factors import characteristic_metrics

        reader = load_factor_reader(DEFAULT_READER).to(model.device)  # diversity against the true factors
        metrics.update(characteristic_metrics(model, reader, test.images, test.labels, test.factors, n=n_oracle))
    metrics["per_label"] = _per_label(metrics)
    return metrics


NOISY_BELOW = 500  # test images under which evaluate warns that its figures are noisy


def noise_note(metrics: dict) -> str | None:
    """A warning when the figures come from fewer than NOISY_BELOW test images, with the standard
    error of the mean accuracy; None otherwise."""
    n = metrics.get("num_test_images", 0)
    if n >= NOISY_BELOW:
        return None
    se = metrics.get("mean_accuracy_se", float("nan"))
    return (f"warning: only {n} test images (under {NOISY_BELOW}): these figures are noisy; mean accuracy "
            f"{metrics['mean_accuracy']:.3f} " + (f"has a standard error of {se:.3f}" if math.isfinite(se) else
                                                  "has a standard error that too few labelled images cannot estimate"))


def _per_label(m: dict) -> dict:
    rows = {nm: {"accuracy": acc} for nm, acc in m["per_label_accuracy"].items()}
    for key, col in (("intervention_success", "interv. success"),
                     ("intervention_success_feasible", "interv. success (feasible)"),
                     ("intervention_success_consistent", "interv. success (exclusive cleared)"),
                     ("intervention_success_add", "interv. success (adding)"),
                     ("intervention_success_remove", "interv. success (removing)"),
                     ("intervention_leakage", "interv. leakage"),
                     ("reconstruction_present", "present in reconstruction"),
                     ("conditional_accuracy_per_label", "conditional acc."),
                     ("conditional_accuracy_compatible_per_label", "conditional acc. (compatible)"),
                     ("characteristic_coverage", "coverage"), ("style_kept", "style kept")):
        for nm, v in (m.get(key) or {}).items():
            if v is not None:
                rows[nm][col] = v
    for nm, d in m.get("diversity", {}).items():
        rows[nm]["diversity ratio"] = d["ratio"]
        rows[nm]["present in resamples"] = d["oracle_present"]
        if "oracle_present_all_faces" in d:
            rows[nm]["present (all faces)"] = d["oracle_present_all_faces"]
    return rows


def format_table(metrics: dict) -> str:
    from .modelcard import metrics_table

    return metrics_table(metrics)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a training run's folder, its model/ folder, or a Hub id")
    p.add_argument("--dataset", choices=["synthetic", "celeba", "folder"],
                   help="default: the model's training dataset (its train_config.json), else synthetic")
    p.add_argument("--root", type=Path, help="celeba / folder: the data folder (default: the model's, from its "
                                            "train_config.json)")
    p.add_argument("--labels", type=Path, dest="labels_csv", help="folder: the CSV of labels (default: the model's)")
    p.add_argument("--limit", type=int, help="evaluate on the first N test images, a number of images (default: all)")
    p.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE, help="oracle folder (synthetic only)")
    p.add_argument("--n-oracle", type=int, default=500, help="test images judged by the oracle, a number of images "
                                                             "(default: 500)")
    p.add_argument("--no-oracle", action="store_true", help="accuracy and reconstruction only")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--json", type=Path, help="write the metrics here")
    p.add_argument("--update", action="store_true",
                   help="write the metrics into the model folder: its metrics.json and its model card's "
                        "evaluation table (after the evaluation has grown, or a style prior was fitted)")
    return p.parse_args(argv)


def data_arguments(args: argparse.Namespace) -> tuple[str, object, object]:
    """(dataset, root, labels_csv): the command line's, else those in the model's train_config.json
    (local models), else the synthetic faces. A folder or CelebA without its paths is a ValueError
    naming the flags."""
    from ccvae.hub import model_dir

    saved = {}
    if Path(args.checkpoint).expanduser().is_dir():
        settings = model_dir(args.checkpoint) / "train_config.json"
        if settings.is_file():
            saved = json.loads(settings.read_text())
    dataset = args.dataset or saved.get("dataset") or "synthetic"
    same = saved.get("dataset") == dataset
    root = args.root or (saved.get("root") if same else None)
    labels_csv = args.labels_csv or (saved.get("labels_csv") if same else None)
    if dataset == "folder" and (root is None or labels_csv is None):
        raise ValueError("--dataset folder needs --root (the images) and --labels (the CSV); the model's "
                         "train_config.json names neither")
    if dataset == "celeba" and root is None:
        raise ValueError("--dataset celeba needs --root, the folder holding img_align_celeba/")
    return dataset, root, labels_csv


def main(args: argparse.Namespace) -> int:
    from ccvae.hub import model_dir


    one_line_warnings()
    is_local = Path(args.checkpoint).expanduser().is_dir()
    if args.update and not is_local:
        print(f"error: --update writes into a local model folder; {args.checkpoint!r} is not one", file=sys.stderr)
        return 2
    try:
        folder = model_dir(args.checkpoint) if is_local else None  # a run folder gives its model/
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        dataset, root, labels_csv = data_arguments(args)
        model = CCVAE.from_pretrained(folder or args.checkpoint).to(default_device(args.device))
        metrics = evaluate(model, dataset, root=root, labels_csv=labels_csv,
                           image_size=model.image_size, limit=args.limit,
                           oracle_path=None if args.no_oracle else args.oracle, n_oracle=args.n_oracle)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    if noise_note(metrics):
        print(noise_note(metrics), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(metrics, indent=2))
    if args.update:
        from .modelcard import replace_evaluation

        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        card = folder / "README.md"
        if card.is_file():
            card.write_text(replace_evaluation(card.read_text(), format_table(metrics)))
        print(f"wrote {folder / 'metrics.json'}" + (f" and the evaluation in {card}" if card.is_file() else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
