"""Ground-truth metrics for the synthetic faces, where the truth is known.

An independent oracle (a separate CNN trained on the generator's true labels, `train.oracle`,
bundled in checkpoints/oracle-synthetic) judges what the model generates; `train.evaluate` adds
these to the metrics of any dataset when it evaluates on the synthetic faces:
- intervention_success: z_i set to the mean of p(z_i | y_i = v), v = 0 and 1, then decoded; the
  fraction of cases in which the oracle reads label i as v.
- intervention_success_feasible: the same over the interventions whose resulting label
  combination occurs in the test labels (every pair of label values seen at least once), so a
  request the data cannot show (a second hair colour, Bald under a hat) is not counted.
- intervention_success_consistent (models with exclusive_labels): the same edits made by
  `editing.intervene` does, as the app makes them: setting a label present also sets the labels the
  model keeps exclusive with it (the other hair colours), where present, to the mean of their
  p(z_j | y_j = 0), so that no edit asks for two hair colours at once.
- intervention_success_add / _remove (with the true labels): the same edits split by what they
  change: v = 1 on the faces without label i (adding it; made as `editing.intervene` makes edits, as the app
  adds a label) and v = 0 on the faces with it (removing it). Edits to the value a face already
  has are nearly free, so these two say which direction fails.
- intervention_leakage: in the same images, the fraction of the other labels whose oracle
  reading changed from the plain reconstruction's.
- conditional_accuracy: y ~ p(y), z ~ p(z | y), decoded; the oracle's agreement with y. z_s is
  drawn from the model's sampling prior (CCVAE.sample_style); for a model with a fitted one,
  conditional_accuracy_standard_prior is the same with z_s ~ N(0, I), the prior it was trained with.
  p(y) is the paper's factorised prior, which also asks for label sets the data never shows (two
  hair colours); for a model with exclusive labels, conditional_accuracy_compatible draws y as the
  app's random faces do (`editing.sample_labels(compatible=True)`: no two exclusive labels
  present, each label's frequency kept).
- diversity: per label, the pixel variance between resamples of z_i ~ p(z_i | y_i = 1) (on the
  classifier's side, as the app draws them: `editing.sample_characteristic`) against
  the variance from resampling one style latent, averaged over the active ones (the paper's
  Figure 3; active: its posterior mean varies across images, so collapsed latents are not the
  yardstick), and the fraction of those resamples in which the oracle still sees the label:
  oracle_present over the faces that show the label (a new variant of their glasses, hat, ...),
  oracle_present_all_faces over every face (for a face without it, an edit too).
- reconstruction_present: per label, over the faces that show it, the fraction whose plain
  reconstruction the oracle reads as showing it: the yardstick for the two rates above, since a
  characteristic the decoder blurs away (small earrings) cannot survive a resample either.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ccvae import CCVAE, editing

from . import batches
from .data.labels import pair_support

DEFAULT_ORACLE = Path(__file__).resolve().parents[1] / "checkpoints" / "oracle-synthetic"


def active_units(z_mean: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Indices of the latents whose posterior mean varies across images, Var_x(E_q[z_j|x]) >
    threshold (Burda et al., 2016); all of them when none does. z_mean: (B, D)."""
    var = z_mean.var(0) if z_mean.shape[0] > 1 else torch.zeros(z_mean.shape[1], device=z_mean.device)
    idx = torch.nonzero(var > threshold).flatten()
    return idx if idx.numel() else torch.arange(z_mean.shape[1], device=z_mean.device)


def feasible_interventions(labels: np.ndarray, support: np.ndarray) -> np.ndarray:
    """(N, L, 2) bool: whether setting label i to v in each row of `labels` gives a combination
    whose every pair (i = v, j = y_j) occurs in `support` (see pair_support)."""
    y = np.asarray(labels)
    N, L = y.shape
    out = np.zeros((N, L, 2), dtype=bool)
    known = y >= 0
    for i in range(L):
        for v in (0, 1):
            ok = np.ones(N, dtype=bool)
            for j in range(L):
                if j != i:
                    ok &= ~known[:, j] | support[i, v, j, np.clip(y[:, j], 0, 1)]
            out[:, i, v] = ok & known[:, i]
    return out


@torch.no_grad()
def oracle_metrics(model: CCVAE, oracle, images: np.ndarray, *, n: int = 500, resamples: int = 8,
                   batch_size: int = 250, seed: int = 0, labels: np.ndarray | None = None) -> dict:
    """The oracle-judged metrics on the first n test images (labels the oracle knows only).

    With the images' true `labels` (N, L), intervention success is also reported over the
    feasible interventions only (intervention_success_feasible): those whose resulting label
    combination occurs in `labels` pair by pair. Setting Bald on a face with a hat, or a second
    hair colour on top of the first, asks for a face the data never shows; the plain metric
    counts those requests too."""
    names = [nm for nm in model.label_names if nm in oracle.label_names]
    mi = [model.label_index(nm) for nm in names]
    oi = torch.tensor([oracle.label_names.index(nm) for nm in names], device=model.device)
    g = torch.Generator(device=model.device).manual_seed(seed)
    means = [editing.characteristic_prior(model, i)[0] for i in mi]  # (2, d) each: the means of p(z_i | y_i = v)

    def read(x: torch.Tensor) -> torch.Tensor:  # oracle readings of our labels: (B, len(names)) bool
        return oracle.predict(x.to(next(oracle.parameters()).device)).to(model.device)[:, oi]

    def agree(y: torch.Tensor, z_y: torch.Tensor) -> np.ndarray:  # per label, faces decoded from z_y read as y
        return (read(editing.decode(model, z_y)) == y[:, mi].bool()).float().sum(0).cpu().numpy()

    success = np.zeros(len(names))
    exclusive = model.exclusive
    consistent = np.zeros(len(names))  # success of editing.intervene's edits (exclusive labels cleared)
    feasible = None
    if labels is not None:
        y_all = np.asarray(labels)[:, mi]
        feasible = feasible_interventions(y_all[:min(n, len(images))], pair_support(y_all))  # (n, A, 2)
        f_hits, f_count = np.zeros(len(names)), np.zeros(len(names))
        change_hits, change_count = np.zeros((len(names), 2)), np.zeros((len(names), 2))  # [:, v]: edits to v on faces without v
    leakage = np.zeros(len(names))
    cond_hits = np.zeros(len(names))
    fitted = model.config["fitted_style_prior"]  # also: conditional accuracy with the training prior N(0, I)
    cond_hits_standard = np.zeros(len(names))
    g_standard = torch.Generator(device=model.device).manual_seed(seed + 1)
    cond_hits_compatible = np.zeros(len(names))  # y drawn with compatible=True (models with exclusive labels)
    g_compatible = torch.Generator(device=model.device).manual_seed(seed + 2)
    div_var, style_var, present = np.zeros(len(names)), np.zeros(len(names)), np.zeros(len(names))
    shown_present, shown = np.zeros(len(names)), np.zeros(len(names))  # resamples of faces that show the label
    rec_present = np.zeros(len(names))  # reconstructions of those faces the oracle reads as showing it
    seen = 0
    total = min(n, len(images))
    for start in range(0, total, batch_size):
        x = batches.to_float(batches.load(images[start:min(start + batch_size, total)])).to(model.device)
        B = x.shape[0]
        seen += B
        z = editing.encode(model, x)
        base = read(editing.decode(model, z))
        base_np = base.cpu().numpy()
        for a, i in enumerate(mi):
            for v in (0, 1):
                seen_v = read(editing.decode(model, editing.set_characteristic(model, z, i, means[a][v])))
                hit = (seen_v[:, a] == bool(v)).cpu().numpy()
                success[a] += hit.sum() / 2
                hit_c = hit
                if v == 1 and exclusive[i].any():  # edits as the app makes them differ from plain ones only here
                    seen_c = read(editing.decode(model, editing.set_characteristic(model, z, i, means[a][v], as_edits=True)))
                    hit_c = seen_c[:, a].cpu().numpy()
                consistent[a] += hit_c.sum() / 2
                if feasible is not None:
                    ok = feasible[start:start + B, a, v]
                    f_hits[a] += hit[ok].sum()
                    f_count[a] += ok.sum()
                    change = y_all[start:start + B, a] == 1 - v  # (B,) faces this edit changes
                    change_hits[a, v] += hit_c[change].sum()
                    change_count[a, v] += change.sum()
                others = [b for b in range(len(names)) if b != a]
                if others:
                    leakage[a] += (seen_v[:, others] != base[:, others]).float().mean(1).sum().item() / 2
        # conditional generation
        y = editing.sample_labels(model, B, generator=g)
        z_y = editing.generate(model, y, generator=g)
        cond_hits += agree(y, z_y)
        if fitted:  # the same z_c with z_s ~ N(0, I), the training prior (its own generator: g's draws stay as they were)
            z_y[:, model.characteristic_size:] = torch.randn(B, model.style_dim, generator=g_standard, device=model.device)
            cond_hits_standard += agree(y, z_y)
        if exclusive.any():  # its own generator too
            cond_hits_compatible += agree(*editing.random_face(model, B, generator=g_compatible))
        # diversity: resamples of z_i under y_i = 1 against resamples of one style latent
        zr = z.repeat_interleave(resamples, 0)  # (B * R, D)
        for a, i in enumerate(mi):
            imgs = editing.decode(model, editing.resample_latent(model, zr, i, present=True, generator=g))
            div_var[a] += imgs.reshape(B, resamples, -1).var(1).mean(1).sum().item()
            seen_r = read(imgs)[:, a].float().reshape(B, resamples).mean(1).cpu().numpy()  # (B,)
            present[a] += seen_r.sum()
            if labels is not None:
                has = y_all[start:start + B, a] == 1
                shown_present[a] += seen_r[has].sum()
                shown[a] += has.sum()
                rec_present[a] += base_np[has, a].sum()
        if model.style_dim:
            # the yardstick: resampling one style latent, averaged over the latents the model uses
            # (a collapsed one, posterior = prior for every image, changes nothing when resampled
            # and would make any ratio look huge); the same denominator for every label
            active = model.characteristic_size + active_units(z[:, model.characteristic_size:])
            v = 0.0
            for j in active.tolist():
                zs = editing.set_latent(zr, j, torch.randn(zr.shape[0], generator=g, device=model.device))
                v += editing.decode(model, zs).reshape(B, resamples, -1).var(1).mean(1).sum().item()
            style_var += v / len(active)
    per = lambda arr: dict(zip(names, map(float, arr / seen)))  # noqa: E731
    diversity = {nm: {"variance": float(div_var[a] / seen), "style_variance": float(style_var[a] / seen),
                      "ratio": float(div_var[a] / max(style_var[a], 1e-12)),
                      "oracle_present": float(shown_present[a] / shown[a] if labels is not None and shown[a] else present[a] / seen),
                      "oracle_present_all_faces": float(present[a] / seen),
                      "faces_with_label": int(shown[a]) if labels is not None else None}
                 for a, nm in enumerate(names)}
    extra = {}
    if fitted:
        extra["conditional_accuracy_standard_prior"] = float((cond_hits_standard / seen).mean())
    if exclusive.any():
        extra |= {"intervention_success_consistent": per(consistent),
                 "intervention_success_consistent_mean": float((consistent / seen).mean()),
                 "conditional_accuracy_compatible": float((cond_hits_compatible / seen).mean()),
                 "conditional_accuracy_compatible_per_label": per(cond_hits_compatible)}
    if feasible is not None:
        rate = f_hits / np.maximum(f_count, 1)
        extra |= {"intervention_success_feasible": dict(zip(names, map(float, rate))),
                 "intervention_success_feasible_mean": float(rate.mean()),
                 "intervention_feasible_fraction": dict(zip(names, map(float, f_count / (2 * seen)))),
                 # labels no face lacks (or has) have no rate in that direction, rather than a false 0
                 "intervention_success_add": {nm: float(change_hits[a, 1] / change_count[a, 1])
                                              for a, nm in enumerate(names) if change_count[a, 1]},
                 "intervention_success_remove": {nm: float(change_hits[a, 0] / change_count[a, 0])
                                                 for a, nm in enumerate(names) if change_count[a, 0]},
                 "reconstruction_present": dict(zip(names, map(float, rec_present / np.maximum(shown, 1))))}
    return {
        **extra,
        "intervention_success": per(success), "intervention_success_mean": float((success / seen).mean()),
        "intervention_leakage": per(leakage), "intervention_leakage_mean": float((leakage / seen).mean()),
        "conditional_accuracy": float((cond_hits / seen).mean()), "conditional_accuracy_per_label": per(cond_hits),
        "diversity": diversity,
        "diversity_ratio_mean": float(np.mean([d["ratio"] for d in diversity.values()])),
        "diversity_present_mean": float(np.mean([d["oracle_present"] for d in diversity.values()])),
        "diversity_present_all_faces_mean": float(np.mean([d["oracle_present_all_faces"] for d in diversity.values()])),
        "num_oracle_images": seen,
    }
