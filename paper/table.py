"""The paper's table on the synthetic faces: mean test accuracy against the labelled fraction f,
CCVAE beside M2, a labels-only classifier and the majority guess.

    python -m paper.table                      # every cell not done yet, then the JSON and the figure
    python -m paper.table --only ccvae-f0.004  # the cells whose name contains this text

A cell is (method, f, seed), trained at one budget for every row (EPOCHS passes over the
unlabelled images of the synthetic-faces recipe; labels only takes as many optimizer steps) into
WORK/<cell>/; a CCVAE cell cut short resumes where its last epoch ended. After every cell the
JSON (docs/figures/supervision.json) and its figure are written again, and the JSON keeps every
finished cell: a rerun, in this checkout or a fresh one, skips those, so a partial table is data.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train import batches

RECIPE = "synthetic-faces"
EPOCHS = 3  # the budget of every row: passes over the unlabelled images (over the labelled ones at f = 1)
FRACTIONS = (0.004, 0.06, 0.2, 1.0)
SEEDS = {0.004: (0, 1, 2), 0.06: (0, 1, 2), 0.2: (0,), 1.0: (0,)}
METHODS = ("ccvae", "m2", "labels_only", "majority")
TRAIN_IMAGES = 50_000  # the synthetic training split
BATCH_SIZE = 64  # the recipe's
# Joy et al. (2021), Table 1: CelebA, 18 labels, mean test accuracy
PAPER_CELEBA = {"ccvae": {0.004: 0.832, 0.06: 0.862, 0.2: 0.878, 1.0: 0.900},
                "m2": {0.004: 0.794, 0.06: 0.862, 0.2: 0.877, 1.0: 0.893}}
EDITING_KEYS = {  # train.evaluate's metrics, reported for CCVAE at each f (docs/metrics.md)
    "interventions_app": "intervention_success_consistent_mean",
    "leakage": "intervention_leakage_mean",
    "characteristic_coverage": "characteristic_coverage_mean",
    "style_kept": "style_kept_mean",
}
DEFAULT_WORK = Path("runs/supervision-table")
DEFAULT_JSON = Path("docs/figures/supervision.json")


@dataclass(frozen=True)
class Cell:
    method: str
    frac: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-f{self.frac:g}-s{self.seed}"


def cells() -> list[Cell]:
    """Every cell, seed 0 of each f first (the table's first draft), then the other seeds."""
    first = [Cell(m, f, 0) for f in FRACTIONS for m in METHODS]
    rest = [Cell(m, f, s) for f in FRACTIONS for s in SEEDS[f][1:] for m in METHODS]
    return first + rest


def steps_per_epoch(frac: float) -> int:
    """Optimizer steps of one epoch at f, as train/trainer.py counts them (semi_supervised's rounding)."""
    labelled = min(max(int(round(frac * TRAIN_IMAGES)), 1), TRAIN_IMAGES)
    return batches.steps_per_epoch(labelled, TRAIN_IMAGES - labelled, BATCH_SIZE)


def command(cell: Cell, folder: Path, *, threads: int | None) -> list[str] | None:
    """The command that trains and scores the cell into `folder` (None: majority, computed here)."""
    common = ["--sup-frac", f"{cell.frac:g}", "--seed", str(cell.seed)]
    thread_args = ["--threads", str(threads)] if threads else []
    if cell.method == "ccvae":
        if (folder / "state").is_dir():
            return [sys.executable, "-m", "train", "--resume", "--out", str(folder), *thread_args]
        return [sys.executable, "-m", "train", "--recipe", RECIPE, *common, "--epochs", str(EPOCHS),
                "--no-figures", "--out", str(folder),
                *thread_args]
    if cell.method == "m2":
        return [sys.executable, "-m", "paper.m2", "--recipe", RECIPE, *common, "--epochs", str(EPOCHS),
                "--out", str(folder), "--quiet", *thread_args]
    if cell.method == "labels_only":
        return [sys.executable, "-m", "paper.labels_only", "--recipe", RECIPE, *common,
                "--steps", str(EPOCHS * steps_per_epoch(cell.frac)), "--out", str(folder), "--quiet", *thread_args]
    if cell.method == "majority":
        return None
    raise ValueError(f"unknown method {cell.method!r}; expected one of {METHODS}")


def record(cell: Cell, folder: Path) -> dict:
    """What the table keeps of a finished cell: its accuracies, CCVAE's editing metrics, the time
    it took and the command that trained it."""
    m = json.loads((folder / "metrics.json").read_text())
    timing_file = folder / "cell.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    return {"mean_accuracy": round(m["mean_accuracy"], 4),
            "per_label_accuracy": {k: round(v, 4) for k, v in m["per_label_accuracy"].items()},
            **({"editing": {k: round(m[key], 4) for k, key in EDITING_KEYS.items() if key in m}}
               if cell.method == "ccvae" else {}),
            "seconds": timing.get("seconds"), "command": timing.get("command")}


def run_cell(cell: Cell, work: Path, *, threads: int | None) -> dict:
    """Train and score one cell into work/<cell> (its metrics.json, once there, marks it done);
    returns its record."""
    folder = work / cell.name
    metrics_file = folder / "metrics.json"
    if metrics_file.is_file():
        return record(cell, folder)
    folder.mkdir(parents=True, exist_ok=True)
    timing_file = folder / "cell.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {"seconds": 0.0, "runs": 0}
    start = time.time()
    cmd = command(cell, folder, threads=threads)
    if cmd is None:
        from train.config import load_recipe, override

        from .labels_only import majority_metrics

        config = override(load_recipe(RECIPE), {"sup_frac": cell.frac, "seed": cell.seed})
        metrics_file.write_text(json.dumps(majority_metrics(config), indent=2))
    else:
        with open(folder / "output.log", "a") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            raise RuntimeError(f"cell {cell.name} failed (exit {code}); see {folder / 'output.log'}")
        if not metrics_file.is_file():  # the trainer and the baselines write it into the cell's folder
            raise RuntimeError(f"cell {cell.name}: the run ended without {metrics_file}")
    timing = {"seconds": round(timing["seconds"] + time.time() - start, 1), "runs": timing["runs"] + 1,
              "command": " ".join(["python", *cmd[1:]]) if cmd else "majority"}
    timing_file.write_text(json.dumps(timing, indent=2))
    return record(cell, folder)


def done_cells(out: Path, work: Path) -> dict[str, dict]:
    """The finished cells: those the table's JSON already holds (it is committed, so a new checkout
    resumes from it), then those finished in the work folders."""
    done = json.loads(out.read_text()).get("cells", {}) if out.is_file() else {}
    for cell in cells():
        if (work / cell.name / "metrics.json").is_file():
            done[cell.name] = record(cell, work / cell.name)
    return done


def summarise(done: dict[str, dict]) -> dict:
    """The table from the finished cells: per method and f, each seed's mean test accuracy, their
    mean and sd; CCVAE's editing metrics per f (seed 0); every cell's record."""
    rows: dict[str, dict[str, dict]] = {}
    editing: dict[str, dict] = {}
    for cell in cells():
        if cell.name not in done:
            continue
        rec = done[cell.name]
        row = rows.setdefault(cell.method, {}).setdefault(f"{cell.frac:g}", {"seeds": [], "accuracy": []})
        row["seeds"].append(cell.seed)
        row["accuracy"].append(rec["mean_accuracy"])
        if cell.method == "ccvae" and cell.seed == 0:
            editing[f"{cell.frac:g}"] = rec.get("editing", {})
    for per_f in rows.values():
        for row in per_f.values():
            acc = np.array(row["accuracy"])
            row["mean"] = round(float(acc.mean()), 4)
            row["sd"] = round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else None
    return {
        "command": "python -m paper.table",
        "dataset": "synthetic faces: 50,000 training, 5,000 test, 15 labels, 64x64",
        "budget": {"epochs": EPOCHS, "recipe": RECIPE, "ccvae_intervention_from": "the recipe's (a fraction of the run)",
                   "labels_only_steps": {f"{f:g}": EPOCHS * steps_per_epoch(f) for f in FRACTIONS}},
        "cells_done": len([c for c in cells() if c.name in done]),
        "cells_total": len(cells()),
        "mean_test_accuracy": rows,
        "ccvae_editing": editing,
        "paper_celeba": {m: {f"{f:g}": v for f, v in r.items()} for m, r in PAPER_CELEBA.items()},
        "cells": {c.name: done[c.name] for c in cells() if c.name in done},
    }


def figure(table: dict, path: Path) -> None:
    """Mean test accuracy against f on a log axis (sd bars where there are seeds), the paper's
    CelebA rows dashed for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    colours = {"ccvae": "tab:blue", "m2": "tab:orange", "labels_only": "tab:green", "majority": "tab:gray"}
    names = {"ccvae": "CCVAE", "m2": "M2", "labels_only": "labels only", "majority": "majority"}
    for method, per_f in table["mean_test_accuracy"].items():
        fs = sorted(per_f, key=float)
        ax.errorbar([float(f) for f in fs], [per_f[f]["mean"] for f in fs], yerr=[per_f[f]["sd"] or 0 for f in fs],
                    marker="o", capsize=3, color=colours[method], label=f"{names[method]} (synthetic)")
    for method, per_f in table["paper_celeba"].items():
        fs = sorted(per_f, key=float)
        ax.plot([float(f) for f in fs], [per_f[f] for f in fs], linestyle="--", marker=".", alpha=0.6,
                color=colours[method], label=f"{names[method]} (paper, CelebA)")
    ax.set_xscale("log")
    ax.set_xticks(FRACTIONS, [f"{f:g}" for f in FRACTIONS])
    ax.set_xlabel("labelled fraction f")
    ax.set_ylabel("mean test accuracy")
    done = f"{table['cells_done']} of {table['cells_total']} cells" if table["cells_done"] < table["cells_total"] else ""
    ax.set_title(f"{EPOCHS} epochs each" + (f"; {done}" if done else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write(work: Path, out: Path) -> dict:
    table = summarise(done_cells(out, work))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=2) + "\n")
    if table["mean_test_accuracy"]:
        figure(table, out.with_suffix(".png"))
    return table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m paper.table", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="one folder per cell")
    p.add_argument("--out", type=Path, default=DEFAULT_JSON, help="the table's JSON; the figure beside it (.png)")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the cells whose name (e.g. ccvae-f0.004-s0) contains TEXT; may repeat")
    p.add_argument("--threads", type=int, help="CPU threads for torch in each cell (default: all cores)")
    p.add_argument("--summary-only", action="store_true", help="train nothing: write the JSON and figure from the cells done")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    todo = [c for c in cells() if not args.only or any(text in c.name for text in args.only)]
    if args.only and not todo:
        print(f"error: no cell matches {args.only}; the cells are named like {cells()[0].name}", file=sys.stderr)
        return 2
    try:
        if not args.summary_only:
            for cell in todo:
                if cell.name in done_cells(args.out, args.work):
                    continue
                start = time.time()
                rec = run_cell(cell, args.work, threads=args.threads)
                print(f"{cell.name}: mean test accuracy {rec['mean_accuracy']:.4f} "
                      f"({time.time() - start:.0f} s)", flush=True)
                write(args.work, args.out)
        table = write(args.work, args.out)
    except (RuntimeError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{table['cells_done']} of {table['cells_total']} cells done; wrote {args.out} and "
          f"{args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
