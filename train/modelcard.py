"""The model card (README.md) of a trained model folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def metrics_table(metrics: dict) -> str:
    """A Markdown table of the headline metrics and the per-label ones."""
    lines = ["| metric | value |", "|---|---|"]
    for key in ("mean_accuracy", "psnr", "mse", "intervention_success_mean", "intervention_leakage_mean",
                "conditional_accuracy", "diversity_ratio_mean", "diversity_present_mean"):
        if key in metrics:
            lines.append(f"| {key} | {metrics[key]:.4g} |")
    per = metrics.get("per_label", {})
    if per:
        cols = sorted({c for row in per.values() for c in row})
        lines += ["", "| label | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, row in per.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[c]:.3f}" if c in row else "" for c in cols) + " |")
    return "\n".join(lines)


def write(directory: Path, *, model, args: argparse.Namespace, counters: dict, metrics: dict | None) -> None:
    command = "python -m train " + " ".join(
        f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k.replace('_', '-')}"
        for k, v in vars(args).items()
        if v not in (None, False) and k not in ("resume",) and not (k == "labels_csv")
    )
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
- trained for {counters.get("epoch", 0)} epochs ({counters.get("step", 0)} steps, {minutes:.1f} minutes of training)

Command:

```
{command}
```

## Evaluation (test split)

{metrics_table(metrics) if metrics else "Not evaluated yet (the run is in progress or ran with --no-eval)."}

## Traversals

Each row walks one label's latent over its traversal range (absent -> present), two faces:

![traversal](traversal.png)
"""
    (Path(directory) / "README.md").write_text(card)
