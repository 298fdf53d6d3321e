"""The model card (README.md) of a trained model folder."""
from __future__ import annotations

import argparse
import re
from pathlib import Path


EVALUATION_HEAD = "## Evaluation (test split)"  # the card's metrics section (train.fit_prior replaces its table)
# the model card's section on a style prior fitted by train.fit_prior, up to the next section
STYLE_PRIOR_SECTION = re.compile(r"\n## Style prior\n.*?(?=\n## |\Z)", re.S)


def metrics_table(metrics: dict) -> str:
    """A Markdown table of the headline metrics and the per-label ones."""
    lines = ["| metric | value |", "|---|---|"]
    for key in ("mean_accuracy", "psnr", "mse", "intervention_success_mean", "intervention_success_feasible_mean",
                "intervention_success_consistent_mean", "intervention_leakage_mean",
                "conditional_accuracy", "conditional_accuracy_standard_prior", "conditional_accuracy_compatible",
                "diversity_ratio_mean", "diversity_present_mean", "diversity_present_all_faces_mean"):
        if key in metrics:
            lines.append(f"| {key} | {metrics[key]:.4g} |")
    per = metrics.get("per_label", {})
    if per:
        cols = sorted({c for row in per.values() for c in row})
        lines += ["", "| label | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, row in per.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in cols) + " |")
    return "\n".join(lines)


def replace_evaluation(card: str, body: str) -> str:
    """card (a model card's text) with the body of its evaluation section replaced by `body`
    (a card without that section is returned as it is)."""
    head = EVALUATION_HEAD + "\n\n"
    if head not in card:
        return card
    return re.sub(re.escape(head) + r".*?(?=\n## |\Z)", lambda _: head + body + "\n", card, count=1, flags=re.S)


def command_line(args: dict, prog: str = "python -m train") -> str:
    """The `prog ...` command that the given arguments spell (a value of 0 is written out; None and
    False, an option not given, are not)."""
    parts = [prog]
    for k, v in args.items():
        if k == "started_at_epoch" or v is None or v is False or v == "None":
            continue
        flag = "--" + ("labels" if k == "labels_csv" else k.replace("_", "-"))
        parts.append(flag if v is True else f"{flag} {' '.join(map(str, v)) if isinstance(v, list) else v}")
    return " ".join(parts)


def style_prior(model, args: argparse.Namespace) -> str:
    if not model.config["fitted_style_prior"]:
        return "N(0, I)"
    n = getattr(args, "fit_style_prior", 0)
    return ("a full-covariance Gaussian fitted to the aggregate posterior q(z_s)"
            + (f" of {n} training faces (`--fit-style-prior {n}`)" if n else ""))


def write(directory: Path, *, model, args: argparse.Namespace, counters: dict, metrics: dict | None,
          history: list[dict] | None = None) -> None:
    commands = [command_line(h) for h in history] if history else [command_line(vars(args))]
    command = "\n".join(commands)
    minutes = counters.get("seconds", 0) / 60
    card = f"""---
library_name: ccvae
license: mit
tags: [ccvae, vae, disentanglement, image-editing]
---
# CCVAE: {args.dataset} ({model.num_labels} labels, f = {args.sup_frac})

A characteristic-capturing VAE (Joy et al., *Capturing Label Characteristics in VAEs*, ICLR 2021)
trained with [ccvae](https://github.com/thwjoy/ccvae). Load it with

```python
from ccvae import CCVAE
model = CCVAE.from_pretrained("path/or/hub-id")
```

- dataset: `{args.dataset}`, {args.image_size}x{args.image_size}, labelled fraction f = {args.sup_frac}
- labels (one characteristic latent each, in this order): {", ".join(f"`{n}`" for n in model.label_names)}
- latents: {model.latent_dim} ({model.num_labels} characteristic + {model.style_dim} style);
  likelihood {model.config["likelihood"]}, scale {model.likelihood_scale().item():.4g}{" (learned)" if model.config["learn_scale"] else ""}
- labels kept exclusive in edits (never together in its training labels): {", ".join(f"{a} / {b}" for a, b in model.config["exclusive_labels"]) or "none"}
- style latents generated from: {style_prior(model, args)}
- trained for {counters.get("epoch", 0)} epochs ({counters.get("step", 0)} steps, {minutes:.1f} minutes of training)

Command{"s (a run, then its --resume)" if len(commands) > 1 else ""}:

```
{command}
```

{EVALUATION_HEAD}

{metrics_table(metrics) if metrics else "Not evaluated yet (the run is in progress or ran with --no-eval)."}

## Traversals

Each row walks one label's latent over its traversal range (absent -> present), two faces, as the
label's slider in the app does (the labels exclusive with it cleared where it reads present):

![traversal](traversal.png)
"""
    old = Path(directory) / "README.md"
    kept = STYLE_PRIOR_SECTION.search(old.read_text()) if old.is_file() and model.config["fitted_style_prior"] else None
    if kept:  # written by train.fit_prior: how the prior was fitted, and with what command
        card = card.rstrip("\n") + "\n\n" + kept.group(0).strip("\n") + "\n"
    old.write_text(card)


def main(argv=None) -> int:
    """`python -m train.modelcard RUN_DIR --metrics FILE`: rewrite RUN_DIR/model/README.md with
    the metrics of a later `python -m train.evaluate ... --json FILE` (the run's command, epochs
    and training time from its args.json and saved state; the config from the model folder)."""
    import json
    import sys

    from ccvae import CCVAE

    from .state import META, read_history

    p = argparse.ArgumentParser(prog="python -m train.modelcard", description=main.__doc__.split("\n")[0])
    p.add_argument("run", type=Path, help="a run folder of `python -m train` (with args.json, state/ and model/)")
    p.add_argument("--metrics", type=Path, required=True, help="metrics JSON written by python -m train.evaluate --json")
    args = p.parse_args(argv)
    try:
        history = read_history(args.run)
        if not history:
            raise FileNotFoundError(f"{args.run} holds no args.json: not a run folder of python -m train")
        counters = json.loads((args.run / "state" / META).read_text())["counters"]
        metrics = json.loads(args.metrics.read_text())
        model = CCVAE.from_pretrained(args.run / "model")
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write(args.run / "model", model=model, args=argparse.Namespace(**history[-1]), counters=counters,
          metrics=metrics, history=history)
    print(f"wrote {args.run / 'model' / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
