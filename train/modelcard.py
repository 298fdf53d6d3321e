"""The model card (README.md) of a trained model folder."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from .config import CONFIG_NAME, RECIPES, SETTING_FLAGS, TrainConfig, flag_dest, load_recipe, to_dict

EVALUATION_HEAD = "## Evaluation (test split)"  # the card's metrics section (train.evaluate --update replaces it)


def metrics_table(metrics: dict) -> str:
    """A Markdown table of the headline metrics and the per-label ones."""
    lines = ["| metric | value |", "|---|---|"]
    for key in ("mean_accuracy", "psnr", "mse", "intervention_success_mean", "intervention_success_feasible_mean",
                "intervention_success_consistent_mean", "intervention_leakage_mean",
                "conditional_accuracy", "conditional_accuracy_standard_prior", "conditional_accuracy_compatible",
                "diversity_ratio_mean", "diversity_present_mean", "diversity_present_all_faces_mean",
                "characteristic_coverage_mean", "style_kept_mean"):
        if metrics.get(key) is not None:
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


NEAREST = "nearest"  # command(): the recipe a run came from is unknown: name the nearest bundled one
MAX_OVERRIDES = 8  # beyond this many overrides the card names the settings file instead
PLACEHOLDERS = {"root": {"celeba": "CELEBA_DIR", "folder": "IMAGES_DIR"}, "labels_csv": {"folder": "LABELS.csv"}}


def public(config: TrainConfig) -> TrainConfig:
    """config with its local paths (root, labels_csv) replaced by placeholders (PLACEHOLDERS), as
    a card or an upload shows them: the user's folders stay on their machine."""
    from .config import override

    values = to_dict(config)
    return override(config, {k: PLACEHOLDERS[k].get(config.dataset, k.upper()) for k in PLACEHOLDERS
                             if values[k] is not None})


def command(config: TrainConfig, recipe: str | None = NEAREST) -> str:
    """The one command that trains `config` from scratch, local paths as placeholders (`public`).

    recipe: the --recipe the run was given: a bundled name (`--recipe NAME` and an override per
    setting that differs from it), None (no --recipe: overrides of the defaults), a file of the
    user's (the settings file the model folder carries), or NEAREST when unknown (the nearest
    bundled recipe). Too many overrides also give the settings file."""
    values = to_dict(public(config))
    bundled = {p.stem: to_dict(load_recipe(p)) for p in sorted(RECIPES.glob("*.json"))}
    if recipe == NEAREST:
        bases = list(bundled.items())
    elif recipe is None:
        bases = [(None, to_dict(TrainConfig()))]
    else:
        bases = [(recipe, bundled[recipe])] if recipe in bundled else []
    best = None
    for name, base in bases:
        changed = {k: v for k, v in values.items() if base[k] != v}
        if best is None or len(changed) < len(best[1]):
            best = (name, changed)
    if best is None or len({k for k in best[1] if k not in PLACEHOLDERS}) > MAX_OVERRIDES:
        return f"python -m train --recipe {CONFIG_NAME} --out runs/NAME   # {CONFIG_NAME}: beside this card"
    flags = {flag_dest(flag): flag for flag in SETTING_FLAGS}
    parts = ["python -m train"] + ([f"--recipe {best[0]}"] if best[0] else [])
    for name, value in best[1].items():  # quoted for a POSIX shell (a --root with a space stays one word)
        if name in flags and value is not None:
            parts.append(f"--{flags[name]} " + " ".join(shlex.quote(str(v)) for v in
                                                      (value if isinstance(value, list) else [value])))
        else:
            parts.append("--set " + shlex.quote(f"{name}={json.dumps(value)}"))
    return " ".join(parts + ["--out runs/NAME"])


def kinds(model) -> str:
    """Which labels' resamples also redraw directions of z_s, and how many, per side."""
    if not model.kind_directions:
        return "none fitted: resampling a characteristic redraws its latent only"
    used = (model.kind_basis.abs().sum(-1) > 0).sum(-1)  # (2, L) directions per side and label
    listed = [f"{name} {int(used[1, i])}/{int(used[0, i])}" for i, name in enumerate(model.label_names) if used[:, i].any()]
    return ("resampling also redraws the directions of z_s along which faces on that side vary at least twice as much "
            f"as the others (with / without the label): {', '.join(listed) or 'none found'}")


def describe_data(config: TrainConfig, data: dict | None) -> tuple[str, str]:
    """(the labelled fraction for the title, the card's line on the training images): counted
    from the data when the trainer gives its counts (train.data.labels.label_counts), else f."""
    if not data:
        return f"f = {config.sup_frac}", f"labelled fraction f = {config.sup_frac}"
    frac = round(data["labelled_cells"], 3)
    return (f"f = {frac}",
            f"labelled fraction f = {frac} (the share of the training images' label cells known; setting sup_frac "
            f"{config.sup_frac}); training images: {data['images']}, of them {data['labelled']} labelled, "
            f"{data['partly_labelled']} partly labelled, {data['unlabelled']} unlabelled; {data['unreadable']} "
            "unreadable (skipped)")


def write(directory: Path, *, model, config: TrainConfig, counters: dict, metrics: dict | None,
          data: dict | None = None) -> None:
    """The model card. counters: the trainer's (epoch, step, seconds, recipe, style_prior_faces);
    data: the training split's counts (`describe_data`), None when unknown."""
    minutes = counters.get("seconds", 0) / 60
    faces = counters.get("style_prior_faces", config.fit_style_prior)
    style = (f"a full-covariance Gaussian fitted to the aggregate posterior q(z_s) of {faces} "
             "training faces" if model.config["fitted_style_prior"] else "N(0, I)")
    title_frac, data_line = describe_data(config, data)
    card = f"""---
library_name: ccvae
license: mit
tags: [ccvae, vae, disentanglement, image-editing]
---
# CCVAE: {config.dataset} ({model.num_labels} labels, {title_frac})

A characteristic-capturing VAE (Joy et al., *Capturing Label Characteristics in VAEs*, ICLR 2021)
trained with [ccvae](https://github.com/thwjoy/ccvae). Load it with

```python
from ccvae import CCVAE
model = CCVAE.from_pretrained("path/or/hub-id")
```

- dataset: `{config.dataset}`, {config.image_size}x{config.image_size}, {data_line}
- labels (one characteristic latent each, in this order): {", ".join(f"`{n}`" for n in model.label_names)}
- latents: {model.latent_dim} ({model.num_labels} characteristic of {model.characteristic_dim} each + {model.style_dim} style);
  likelihood {model.config["likelihood"]}, scale {model.likelihood_scale().item():.4g} (learned)
- labels kept exclusive in edits (never together in its training labels): {", ".join(f"{a} / {b}" for a, b in model.config["exclusive_labels"]) or "none"}
- style latents generated from: {style}
- kinds (`CCVAE.fit_kinds`): {kinds(model)}
- trained for {counters.get("epoch", 0)} of {config.epochs} epochs ({counters.get("step", 0)} steps, {minutes:.1f} minutes of training)

Trained from scratch by one command (every setting is in `{CONFIG_NAME}` beside this card):

```
{command(config, counters.get("recipe", NEAREST))}
```

{EVALUATION_HEAD}

{metrics_table(metrics) if metrics else "Not evaluated yet (the run is in progress or ran with --no-eval)."}

## Traversals

Each row walks one label's latent over its traversal range (absent -> present), two faces, as the
label's slider in the app does (the labels exclusive with it cleared where it reads present):

![traversal](traversal.png)
"""
    (Path(directory) / "README.md").write_text(card)
