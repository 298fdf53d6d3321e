"""What a model's latents know about the faces' generating factors: `python -m train.probe [CHECKPOINT]`.

The synthetic faces are drawn from known factors (`train.data.synthetic.FACTOR_NAMES`: the
characteristics of each label, such as the earrings' style, size and hue, and the style factors,
such as the face's width and the background). For each factor, over the test faces on which it is
drawn (`FACTOR_SHOWN_WHEN`: the earrings' hue only on faces that wear earrings), a least-squares
linear map from the posterior means E_q[z|x] is fitted on the first `fit` share of those faces and
scored on the rest (t one-hot for a categorical factor, (cos, sin) for a hue around the circle):

    R^2 = 1 - sum (t - t_hat)^2 / sum (t - mean t)^2     (held out)

from all of z, from the characteristic latents z_c only, from the style latents z_s only, and from
the single latent that predicts it best (named). R^2 near 0 means the encoder passes on nothing
linear about the factor, so the decoder can only draw its average (README: the bundled model
knows the hue of the hat, the background and the shirt, and next to nothing of the earrings').
A linear probe is a lower bound on what z holds; it is the one the decoder's first layer sees.

It also prints how many style latents the encoder uses and the nats each one carries
(`style_usage`): every one active at several nats means the encoder uses all of z_s's room
(README: on the bundled model it does, yet a run with twice the room, v11, spent it on what it
already drew and still left the earrings out).

`--regions` adds, for each label, the pixels it draws (the face rendered with and without it) and
how much of them the reconstructions get (`region_errors`).

`--kept LABEL` adds what `train.evaluate`'s diversity reads on its judged faces, over every test face
that has the label (`label_kept`): how often the oracle sees the label on the faces, on their
reconstructions and on `--resamples` draws of z_i from p(z_i | y_i = 1) each, split by the
label's factors and by the other labels the faces have (`label_groups`; README: the earrings, over
all 1,162 of the 5,000 test faces that wear them, go missing on men).
With `--refit STEPS` it also asks whether the decoder *can* draw the label: each face's z is fitted
by gradient with the networks frozen (`refit_latents`, the MAP of log p(x|z) p(z_c|y) N(z_s; 0, I)
from E_q[z|x]), and the oracle reads the image that z decodes to. If no z draws the label better
than the encoder's, the decoder is what fails, not the inference (README: so it is for the earrings).

`--added LABEL` is the other direction, what `train.evaluate`'s `intervention_success_add` reads
on its judged faces, over every test face that lacks the label (`label_added`): how often the
oracle sees it once the app's edit has added it, split by the other labels the faces have
(docs/experiments/earrings.md: the FiLM-and-emphasis runs fail to make women bald, a face the
data never shows, and fail on some men too).

`--stages LABEL` asks where in the encoder the look of LABEL's characteristics is lost
(`stage_probes`): over the test faces that have it, a ridge map from each stage's features (the
feature maps after each strided convolution, average-pooled to at most 8x8; the hidden layer; the
posterior mean) to each of the label's factors, its penalty chosen on part of the fitted faces
(README: on the bundled model the earrings' kind is in the feature maps and mostly gone by z).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ccvae import CCVAE, CheckpointError, editing

from . import batches
from .data import load_dataset
from .data.synthetic import (CATEGORICAL_FACTORS, CIRCULAR_FACTORS, FACTOR_NAMES, FACTOR_SHOWN_WHEN, LABEL_NAMES,
                             render_face, sample_factors)
from .evaluate import BUNDLED_MODEL, DEFAULT_ORACLE
from .oracle import load_oracle

def held_out_r2(z_fit: np.ndarray, t_fit: np.ndarray, z_test: np.ndarray, t_test: np.ndarray) -> float:
    """Held-out R^2 of the least-squares affine prediction of t from z.

    z_*: (N, D) features; t_*: (N,) or (N, K) targets (K outputs pooled: one minus the summed
    squared error over the summed squared deviation from the test mean). 0 is the test mean's score;
    it can fall below 0 when the fit does worse than the mean on new faces."""
    if len(z_fit) <= z_fit.shape[1] + 1:
        raise ValueError(f"need more fitted faces than features + 1 ({z_fit.shape[1] + 1}), got {len(z_fit)}")
    a_fit = np.c_[z_fit, np.ones(len(z_fit))]
    a_test = np.c_[z_test, np.ones(len(z_test))]
    t_fit, t_test = t_fit.reshape(len(t_fit), -1), t_test.reshape(len(t_test), -1)
    w, *_ = np.linalg.lstsq(a_fit, t_fit, rcond=None)
    return pooled_r2(t_test, a_test @ w)


def pooled_r2(t: np.ndarray, pred: np.ndarray) -> float:
    """1 - sum (t - pred)^2 / sum (t - mean t)^2 over rows and outputs, t and pred (N, K); NaN for a
    constant t (nothing to explain)."""
    if np.ptp(t, axis=0).max() <= 1e-12:
        return float("nan")
    return float(1 - ((pred - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum())


def label_factors(label: str) -> list[str]:
    """The factors drawn only on faces that have `label` (FACTOR_SHOWN_WHEN = (label, 1)): its
    characteristics, such as the earrings' style, size and hue."""
    return [k for k in FACTOR_NAMES if FACTOR_SHOWN_WHEN.get(k) == (label, 1)]


def faces_with(test, label: str, value: int = 1) -> np.ndarray:
    """Indices of the faces of an ImageSet whose `label` is `value` (1: the faces that have it)."""
    return np.flatnonzero(np.asarray(test.labels)[:, test.label_names.index(label)] == value)


def factor_target(name: str, values: np.ndarray) -> np.ndarray:
    """(N,) values as a regression target: as they are; one-hot (N, K) for a categorical factor;
    (cos 2 pi h, sin 2 pi h), (N, 2), for a hue around the whole circle."""
    if name in CATEGORICAL_FACTORS:
        kinds = np.unique(values)
        return (values[:, None] == kinds[None]).astype(np.float64)
    if name in CIRCULAR_FACTORS:
        angle = 2 * np.pi * values.astype(np.float64)
        return np.stack([np.cos(angle), np.sin(angle)], 1)
    return values.astype(np.float64)


def probe(z: np.ndarray, factors: dict[str, np.ndarray], labels: np.ndarray, label_names: list[str], *,
          num_characteristic: int, latent_names: list[str], names: list[str] | None = None,
          fit: float = 0.7, min_faces: int = 100) -> list[dict]:
    """One row per factor: faces it is drawn on and the held-out R^2 of its linear prediction.

    z: (N, D) posterior means, the first `num_characteristic` columns z_c; factors: name -> (N,)
    values; labels: (N, L) in {0, 1} named by `label_names` (the conditions of FACTOR_SHOWN_WHEN).
    Rows of factors drawn on fewer than `min_faces` faces carry faces only (r2 None)."""
    if not 0 < fit < 1:
        raise ValueError(f"fit must be a share in (0, 1), got {fit}")
    groups = {"r2": slice(None), "r2_characteristic": slice(0, num_characteristic),
              "r2_style": slice(num_characteristic, None)}
    rows = []
    for name in names or FACTOR_NAMES:
        keep = np.ones(len(z), dtype=bool)
        if name in FACTOR_SHOWN_WHEN:
            label, value = FACTOR_SHOWN_WHEN[name]
            keep = labels[:, label_names.index(label)] == value
        row = {"factor": name, "faces": int(keep.sum()), "shown_when": FACTOR_SHOWN_WHEN.get(name)}
        n_fit = int(keep.sum() * fit)
        if keep.sum() < min_faces or n_fit <= z.shape[1] + 1:
            rows.append(row | dict.fromkeys([*groups, "best_latent", "best_r2"]))
            continue
        zk, tk = z[keep], factor_target(name, factors[name][keep])
        for key, cols in groups.items():
            zc = zk[:, cols]
            row[key] = held_out_r2(zc[:n_fit], tk[:n_fit], zc[n_fit:], tk[n_fit:]) if zc.shape[1] else None
        single = [held_out_r2(zk[:n_fit, [j]], tk[:n_fit], zk[n_fit:, [j]], tk[n_fit:]) for j in range(z.shape[1])]
        if np.isnan(single).all():  # the factor is constant on the test faces: nothing to explain
            rows.append(row | {"best_latent": None, "best_r2": None})
            continue
        best = int(np.nanargmax(single))
        rows.append(row | {"best_latent": latent_names[best], "best_r2": single[best]})
    return rows


def format_rows(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    fmt = lambda v: "—" if v is None or v != v else f"{v:.3f}"  # noqa: E731  (None, NaN)
    lines = ["| factor | drawn on | faces | R² all z | R² z_c | R² z_s | best single latent |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        where = f"{r['shown_when'][0]} = {r['shown_when'][1]}" if r["shown_when"] else "all"
        best = "—" if r["best_latent"] is None else f"{r['best_latent']} ({r['best_r2']:.3f})"
        lines.append(f"| {r['factor']} | {where} | {r['faces']} | {fmt(r['r2'])} | {fmt(r['r2_characteristic'])} "
                     f"| {fmt(r['r2_style'])} | {best} |")
    return "\n".join(lines)


def style_usage(loc_s: np.ndarray, kl_s: np.ndarray, *, threshold: float = 0.01) -> dict:
    """How much of the style latents' room the encoder uses, over N faces.

    loc_s: (N, S) posterior means of z_s; kl_s: (N, S) KL(q(z_j|x) || N(0, 1)) per face and latent.
    A latent is active when its mean varies across faces, Var_x E_q[z_j|x] > threshold (as
    `train.evaluate.active_units`). Returns the counts, each latent's mean KL in nats (largest
    first) and their sum. Every latent active, each at several nats, says the encoder uses all the
    room z_s has (not, by itself, that more room would go to the factors it leaves out)."""
    kl = kl_s.mean(0)
    return {"dims": int(loc_s.shape[1]), "active": int((loc_s.var(0) > threshold).sum()), "threshold": threshold,
            "kl": sorted(kl.tolist(), reverse=True), "kl_total": float(kl.sum())}


def format_usage(u: dict) -> str:
    """style_usage's result as one line."""
    if not u["dims"]:
        return "style latents z_s: none"
    kl = u["kl"]
    return (f"style latents z_s: {u['active']} of {u['dims']} active (Var_x E_q[z_j|x] > {u['threshold']:g}); "
            f"KL to N(0, 1) per latent {kl[-1]:.2f} .. {kl[0]:.2f} nats (median {float(np.median(kl)):.2f}), "
            f"{u['kl_total']:.1f} in all")


def region_errors(x: np.ndarray, x_without: np.ndarray, recon: np.ndarray, *, tol: float = 0.02) -> dict:
    """Where a label is drawn and how much of it a reconstruction gets, over N faces that have it.

    x: (N, H, W, C) the faces; x_without: the same faces rendered without the label; recon: the
    model's reconstructions of x; all in [0, 1]. The label's pixels are those where x and x_without
    differ (summed over channels, by more than `tol`). Returns the mean number of such pixels per
    face, the share of the reconstructions' squared error that falls on them, their per-pixel mean
    squared error over that of the other pixels, and `captured` = 1 - SE(recon) / SE(x_without) on
    them: 1 for a reconstruction that draws the label exactly, 0 for one that leaves it out, below 0
    for one that does worse than leaving it out; under a Gaussian p(x|z) it is the share of the
    label's log-likelihood the model earns."""
    mask = np.abs(x - x_without).sum(-1) > tol                  # (N, H, W)
    se = ((recon - x) ** 2).sum(-1)                               # (N, H, W)
    left_out = (((x_without - x) ** 2).sum(-1) * mask).sum()
    there, elsewhere = (se * mask).sum(), (se * ~mask).sum()
    return {"pixels": float(mask.sum(axis=(1, 2)).mean()), "error_share": float(there / max(se.sum(), 1e-12)),
            "mse_ratio": float((there / max(mask.sum(), 1)) / max(elsewhere / max((~mask).sum(), 1), 1e-12)),
            "captured": float(1 - there / left_out) if left_out > 0 else float("nan")}


def label_regions(model: CCVAE, *, faces: int = 100, data_seed: int = 0, scan: int = 6000) -> list[dict]:
    """region_errors of each of the model's synthetic labels over (up to) `faces` test faces that have
    it, found among the first `scan` of the test split; one row per label. The label's pixels are
    those its flag draws (the face rendered with the flag off, every factor kept): none for the hair
    colours, which the renderer draws from hair_class (their rows carry faces and pixels = 0 only);
    for Smiling and Narrow_Eyes, only what the flag adds to the smile and eye_open factors."""
    names = [nm for nm in model.label_names if nm in LABEL_NAMES]
    found = {nm: [] for nm in names}
    for i in range(scan):
        f = sample_factors(data_seed, "test", i)
        for nm in names:
            if f[nm] and len(found[nm]) < faces:
                found[nm].append(f)
        if all(len(v) >= faces for v in found.values()):
            break
    rows = []
    for nm in names:
        if not found[nm]:
            rows.append({"label": nm, "faces": 0})
            continue
        x = np.stack([render_face(f, model.image_size) for f in found[nm]]).astype(np.float32) / 255
        x0 = np.stack([render_face(dict(f, **{nm: False}), model.image_size) for f in found[nm]]).astype(np.float32) / 255
        recon = editing.reconstruct(model, torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).cpu().numpy()
        row = {"label": nm, "faces": len(found[nm])} | region_errors(x, x0, recon)
        rows.append(row if row["pixels"] else {"label": nm, "faces": len(found[nm]), "pixels": 0.0})
    return rows


def format_regions(rows: list[dict]) -> str:
    """label_regions rows as a Markdown table."""
    lines = ["| label | faces | pixels it draws | share of the squared error | MSE there ÷ elsewhere | captured |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if not r["faces"] or not r["pixels"]:  # none found, or drawn from a factor (hair colours: hair_class)
            lines.append(f"| {r['label']} | {r['faces']} | {'0' if r['faces'] else '—'} | — | — | — |")
            continue
        lines.append(f"| {r['label']} | {r['faces']} | {r['pixels']:.0f} | {r['error_share']:.3f} | {r['mse_ratio']:.1f} "
                     f"| {r['captured']:.2f} |")
    return "\n".join(lines)


def refit_latents(model: CCVAE, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, *, steps: int,
                  lr: float = 0.03) -> torch.Tensor:
    """The latents that best explain each image under the model, the networks frozen: `steps` Adam
    steps from z (B, D) on

        log p(x | z) + log p(z_c | y) + log N(z_s; 0, I)      (each image on its own)

    x: (B, C, H, W) in [0, 1]; y: (B, L) in {0, 1}. Returns (B, D), detached. Only z receives
    gradients (the parameters' .grad stay untouched). Comparing what z decodes to with the
    encoder's reconstruction separates the encoder's inference gap from the decoder's reach."""
    if steps < 1:
        raise ValueError(f"refit steps must be at least 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"refit lr must be positive, got {lr}")
    n_c = model.num_labels
    prior = model.conditional_prior(y.to(z.device))
    z = z.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            log_joint = (model.log_likelihood(x, model.decode_logits(z)) + prior.log_prob(z[:, :n_c]).sum(-1)
                         - 0.5 * z[:, n_c:].pow(2).sum(-1))
            (z.grad,) = torch.autograd.grad(-log_joint.sum(), [z])
            opt.step()
    return z.detach()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Per-image PSNR in dB of images in [0, 1]: (B,)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return (-10 * torch.log10(mse)).cpu().numpy().astype(np.float64)


def oracle_reading(oracle, label: str):
    """A function of images x (B, C, H, W) in [0, 1] -> (B,) float64, 1 where the oracle sees `label`."""
    oi = oracle.label_names.index(label)
    return lambda x: oracle.predict(x.cpu())[:, oi].numpy().astype(np.float64)


def label_kept(model: CCVAE, oracle, images: np.ndarray, *, label: str, resamples: int = 8, batch: int = 250,
               seed: int = 0, refit: int = 0, labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The oracle's reading of `label` on faces that have it: per face, on the face itself
    (`original`), on its reconstruction from the posterior mean (`reconstruction`) and the share of
    `resamples` draws of z_i ~ p(z_i | y_i = 1), the rest of z kept, in which it sees it (`resamples`).
    With `refit` > 0 steps, also on the image decoded from the refitted latents (`refitted`, see
    `refit_latents`; `labels` (N, L) in the model's label order is then required), and both images'
    PSNR against the face (`psnr_reconstruction`, `psnr_refitted`).

    images: (N, H, W, C) uint8. Returns name -> (N,) float arrays. The draws come from one generator
    seeded with `seed`, batch by batch, so the figures repeat exactly."""
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if refit < 0:
        raise ValueError(f"refit steps must be at least 0, got {refit}")
    if refit and (labels is None or len(labels) != len(images) or np.shape(labels)[1:] != (model.num_labels,)):
        raise ValueError(f"refit needs labels of shape ({len(images)}, {model.num_labels}), "
                         f"got {None if labels is None else np.shape(labels)}")
    li = model.label_index(label)
    g = torch.Generator().manual_seed(seed)
    seen = {"original": [], "reconstruction": [], "resamples": []}
    if refit:
        seen.update(refitted=[], psnr_reconstruction=[], psnr_refitted=[])
    read = oracle_reading(oracle, label)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = batches.to_float(batches.load(images[start:start + batch]))
            z = editing.encode(model, x)
            recon = editing.decode(model, z)
            seen["original"].append(read(x))
            seen["reconstruction"].append(read(recon))
            draws = [read(editing.decode(model, editing.resample_latent(model, z, li, present=True, generator=g)))
                     for _ in range(resamples)]
            seen["resamples"].append(np.stack(draws, 1).mean(1))
            if refit:
                x_d = x.to(model.device)
                y = torch.as_tensor(np.asarray(labels[start:start + batch]), dtype=torch.float32)
                fitted = editing.decode(model, refit_latents(model, x_d, y, z, steps=refit))  # all on the model's device
                seen["refitted"].append(read(fitted))
                seen["psnr_reconstruction"].append(_psnr(recon, x_d))
                seen["psnr_refitted"].append(_psnr(fitted, x_d))
    return {k: np.concatenate(v) for k, v in seen.items()}


def label_added(model: CCVAE, oracle, images: np.ndarray, *, label: str, batch: int = 250) -> dict[str, np.ndarray]:
    """The oracle's reading of `label` on faces that lack it: per face, on the face itself
    (`original`), on its reconstruction from the posterior mean (`reconstruction`) and on the face
    with the label added as the app adds it (`added`: `editing.intervene` sets z_i to the mean of
    p(z_i | y_i = 1) and clears the labels the model keeps exclusive with it).

    images: (N, H, W, C) uint8. Returns name -> (N,) float arrays; no random draws."""
    li = model.label_index(label)
    loc, _ = model.prior_params()  # (2, L): the means of p(z_i | y_i = 0) and p(z_i | y_i = 1)
    seen = {"original": [], "reconstruction": [], "added": []}
    read = oracle_reading(oracle, label)
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = batches.to_float(batches.load(images[start:start + batch]))
            z = editing.encode(model, x)
            seen["original"].append(read(x))
            seen["reconstruction"].append(read(editing.decode(model, z)))
            seen["added"].append(read(editing.decode(model, editing.intervene(model, z, li, loc[1, li]))))
    return {k: np.concatenate(v) for k, v in seen.items()}


def kept_groups(label: str, factors: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """(name, mask) splits of the faces by the factors drawn when `label` is present: one per kind of
    a categorical factor, thirds of a numeric one (hues around the whole circle are not split)."""
    groups = []
    for name in label_factors(label):
        if name in CIRCULAR_FACTORS:
            continue
        v = np.asarray(factors[name], dtype=np.float64)
        if name in CATEGORICAL_FACTORS:
            groups += [(f"{name} = {k:g}", v == k) for k in np.unique(v)]
        else:
            t1, t2 = np.quantile(v, [1 / 3, 2 / 3])
            groups += [(f"{name}, lowest third", v <= t1), (f"{name}, middle third", (v > t1) & (v <= t2)),
                       (f"{name}, highest third", v > t2)]
    return groups


def label_groups(label: str, labels: np.ndarray, names: Sequence[str], *, min_faces: int = 10
                 ) -> list[tuple[str, np.ndarray]]:
    """(name, mask) splits of the faces by the other labels: "with X" for each label X other than
    `label` that at least `min_faces` and at most all but `min_faces` of the faces have (labels: (N, L)
    0/1 in the order of `names`). On the synthetic faces this is where a label goes missing with
    the company it keeps (README: earrings on men, which wear them on 5 % of the training faces)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(names):
        raise ValueError(f"labels must be (N, {len(names)}) for the labels {list(names)}, got shape {labels.shape}")
    groups = []
    for j, name in enumerate(names):
        mask = labels[:, j] == 1
        if name != label and min_faces <= mask.sum() <= len(mask) - min_faces:
            groups.append((f"with {name}", mask))
    return groups


def _group_rows(seen: dict[str, np.ndarray], columns: Sequence[str], groups: list[tuple[str, np.ndarray]]
                ) -> list[str]:
    """Markdown rows "| group | faces | mean of each column |": all faces, then each non-empty group."""
    everyone = np.ones(len(seen[columns[0]]), dtype=bool)
    return [f"| {name} | {int(mask.sum())} | " + " | ".join(f"{seen[c][mask].mean():.3f}" for c in columns) + " |"
            for name, mask in [("all", everyone), *groups] if mask.any()]


def format_kept(label: str, seen: dict[str, np.ndarray], groups: list[tuple[str, np.ndarray]], n: int,
                resamples: int) -> str:
    """label_kept's result, overall and by group, as a Markdown table."""
    refit = "refitted" in seen
    lines = [f"{label}: the oracle's reading on the {len(seen['original'])} of {n} test faces that have it "
             f"({resamples} resamples of z_i each)",
             "| faces | n | originals | reconstructions | resamples |" + (" refitted z |" if refit else ""),
             "|---|---|---|---|---|" + ("---|" if refit else ""),
             *_group_rows(seen, ["original", "reconstruction", "resamples", *(["refitted"] if refit else [])], groups)]
    if refit:
        lines.append(f"PSNR of the reconstructions {seen['psnr_reconstruction'].mean():.2f} dB, of the images the "
                     f"refitted z decode to {seen['psnr_refitted'].mean():.2f} dB")
    return "\n".join(lines)


def ridge_r2(x_fit: np.ndarray, t_fit: np.ndarray, x_test: np.ndarray, t_test: np.ndarray, *,
             penalties=(0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5), val: float = 0.25) -> float:
    """Held-out R^2 (as `held_out_r2`) of a ridge map from centred features, for many features.

    x_*: (N, F), F may exceed N; t_*: (N,) or (N, K). The penalty is the one of `penalties` that
    scores best on the last `val` share of the fitted rows when fitted on the rest; the map is then
    refitted on all of them. Centring, scaling and the choice use the fitted rows only."""
    if not 0 < val < 1:
        raise ValueError(f"val must be a share in (0, 1), got {val}")
    t_fit, t_test = t_fit.reshape(len(t_fit), -1), t_test.reshape(len(t_test), -1)
    cut = int(round(len(x_fit) * (1 - val)))
    if cut < 2 or cut == len(x_fit):
        raise ValueError(f"need at least 3 fitted rows to choose the penalty, got {len(x_fit)}")

    def fit(x, t):  # -> predict(x_new) for each penalty, from one SVD
        # centred; one scale for all features (mean variance 1): per-feature scaling would blow up
        # units that are nearly dead on these rows and alive on others
        mu, t_mu = x.mean(0), t.mean(0)
        sd = np.sqrt(((x - mu) ** 2).mean()) + 1e-12
        u, sv, vt = np.linalg.svd((x - mu) / sd, full_matrices=False)
        ut = u.T @ (t - t_mu)
        return lambda x_new, lam: ((x_new - mu) / sd) @ (vt.T @ ((sv / (sv ** 2 + lam))[:, None] * ut)) + t_mu

    chooser = fit(x_fit[:cut], t_fit[:cut])
    best = max(penalties, key=lambda lam: pooled_r2(t_fit[cut:], chooser(x_fit[cut:], lam)))
    return pooled_r2(t_test, fit(x_fit, t_fit)(x_test, best))


def encoder_stages(model: CCVAE, images: np.ndarray, *, batch: int = 250, pool: int = 8) -> dict[str, np.ndarray]:
    """What the encoder holds at each stage for images (N, H, W, C) uint8: name -> (N, F) float64.

    The feature maps after each strided convolution (its ReLU), average-pooled to at most
    pool x pool so that a probe reads a few thousand features ("32x32x32 -> 8x8"), the hidden
    layer ("hidden 256") and the posterior mean E_q[z|x] ("z 45")."""
    feats: dict[str, list] = {}
    keep = lambda name, t: feats.setdefault(name, []).append(t.flatten(1).float().cpu().numpy())  # noqa: E731
    with torch.no_grad():
        for start in range(0, len(images), batch):
            h = batches.to_float(batches.load(images[start:start + batch])).to(model.device)
            for layer in model.encoder.body:
                h = layer(h)
                if isinstance(layer, torch.nn.ReLU) and h.shape[-1] > 1:  # (B, C, S, S) after a strided conv
                    c, side = h.shape[1], h.shape[-1]
                    if side > pool:
                        keep(f"{side}x{side}x{c} -> {pool}x{pool}", F.adaptive_avg_pool2d(h, pool))
                    else:
                        keep(f"{side}x{side}x{c}", h)
            keep(f"hidden {h.shape[1]}", h)  # (B, hidden_dim), after the last conv, its ReLU and Flatten
            keep(f"z {model.latent_dim}", model.encoder.loc(h))  # the posterior mean
    return {k: np.concatenate(v).astype(np.float64) for k, v in feats.items()}


def stage_probes(stages: dict[str, np.ndarray], factors: dict[str, np.ndarray], names: list[str], *,
                 fit: float = 0.7) -> list[dict]:
    """For each factor name, the held-out ridge R^2 from each stage's features (`ridge_r2`,
    fitted on the first `fit` share of the rows): [{"factor", "faces", stage name: R^2, ...}]."""
    rows = []
    for name in names:
        t = factor_target(name, np.asarray(factors[name]))
        cut = int(len(t) * fit)
        rows.append({"factor": name, "faces": len(t),
                     **{k: ridge_r2(x[:cut], t[:cut], x[cut:], t[cut:]) for k, x in stages.items()}})
    return rows


def format_stage_rows(rows: list[dict]) -> str:
    stages = [k for k in rows[0] if k not in ("factor", "faces")]
    lines = ["| factor | faces | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    lines += [f"| {r['factor']} | {r['faces']} | " + " | ".join(f"{r[k]:.2f}" for k in stages) + " |" for r in rows]
    return "\n".join(lines)


def format_added(label: str, seen: dict[str, np.ndarray], groups: list[tuple[str, np.ndarray]], n: int) -> str:
    """label_added's result, overall and by group, as a Markdown table."""
    return "\n".join([f"{label}: the oracle's reading on the {len(seen['original'])} of {n} test faces that lack it, "
                      "and with it added as the app adds it (editing.intervene)",
                      "| faces | n | originals | reconstructions | added |", "|---|---|---|---|---|",
                      *_group_rows(seen, ["original", "reconstruction", "added"], groups)])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.probe", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_MODEL),
                   help="model folder or Hub id (default: the bundled model)")
    p.add_argument("--n", type=int, default=5000, help="synthetic test faces to encode")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--factors", nargs="+", metavar="FACTOR", help=f"only these (default: all {len(FACTOR_NAMES)})")
    p.add_argument("--fit", type=float, default=0.7, help="share of each factor's faces the map is fitted on")
    p.add_argument("--regions", action="store_true",
                   help="also: for each label, its pixels (the face rendered with and without it) and how much of "
                        "them the reconstructions get")
    p.add_argument("--region-faces", type=int, default=100, help="faces per label for --regions")
    p.add_argument("--kept", metavar="LABEL", help="also: over every test face (of --n) that has LABEL, how often the "
                                                   "oracle sees it in the face, its reconstruction and its resamples")
    p.add_argument("--added", metavar="LABEL", help="also: over every test face (of --n) that lacks LABEL, how often "
                                                    "the oracle sees it once the app's edit adds it, by the other labels")
    p.add_argument("--stages", metavar="LABEL", help="also: over every test face (of --n) that has LABEL, what each "
                                                     "stage of the encoder holds of LABEL's factors (ridge R²)")
    p.add_argument("--resamples", type=int, default=8, help="draws of z_i per face for --kept")
    p.add_argument("--refit", type=int, default=0, metavar="STEPS",
                   help="with --kept: also fit each face's z by STEPS Adam steps, the networks frozen, and read "
                        "what it decodes to (0: off; ~0.5 s a face for 400 steps on 2 CPU cores)")
    p.add_argument("--oracle", type=Path, default=DEFAULT_ORACLE, help="oracle folder for --kept and --added")
    args = p.parse_args(argv)
    unknown = sorted(set(args.factors or []) - set(FACTOR_NAMES))
    if unknown:
        p.error(f"unknown factor(s) {unknown}; the synthetic factors are {FACTOR_NAMES}")
    if args.n < 2:
        p.error(f"--n must be at least 2 faces, got {args.n}")
    if args.region_faces < 1:
        p.error(f"--region-faces must be at least 1, got {args.region_faces}")
    if not 0 < args.fit < 1:
        p.error(f"--fit must be a share in (0, 1), got {args.fit}")
    for flag, label in (("--kept", args.kept), ("--added", args.added)):
        if label is not None and label not in LABEL_NAMES:
            p.error(f"{flag}: unknown label {label!r}; the synthetic labels are {list(LABEL_NAMES)}")
    if args.stages is not None and args.stages not in LABEL_NAMES:
        p.error(f"--stages: unknown label {args.stages!r}; the synthetic labels are {list(LABEL_NAMES)}")
    if args.stages is not None and not label_factors(args.stages):
        p.error(f"--stages: {args.stages} has no factors of its own drawn on the faces that have it, nothing to probe")
    if args.resamples < 1:
        p.error(f"--resamples must be at least 1, got {args.resamples}")
    if args.refit < 0:
        p.error(f"--refit must be 0 (off) or a number of steps, got {args.refit}")
    if args.refit and args.kept is None:
        p.error("--refit reads the label named by --kept; add --kept LABEL")
    return args


def main(args: argparse.Namespace) -> int:
    try:
        model = CCVAE.from_pretrained(args.checkpoint).eval()
        test = load_dataset("synthetic", "test", image_size=model.image_size, seed=args.data_seed, limit=args.n)
        oracle = load_oracle(args.oracle) if args.kept or args.added else None
        for flag, label in (("--kept", args.kept), ("--added", args.added)):  # checked before the probes run
            if label is None:
                continue
            if label not in model.label_names:
                raise ValueError(f"{flag}: {args.checkpoint} has no latent for {label!r}; its labels are {model.label_names}")
            if label not in oracle.label_names:
                raise ValueError(f"{flag}: the oracle {args.oracle} does not read {label!r}")
            if oracle.image_size != model.image_size:
                raise ValueError(f"{flag}: the oracle {args.oracle} reads {oracle.image_size}x{oracle.image_size} "
                                 f"images, the model draws {model.image_size}x{model.image_size}")
        if args.added:
            lacks = faces_with(test, args.added, 0)
            if not len(lacks):
                raise ValueError(f"--added: every one of the first {len(test)} test faces has {args.added}; raise --n")
        if args.kept:
            has = faces_with(test, args.kept)
            if not len(has):
                raise ValueError(f"--kept: none of the first {len(test)} test faces has {args.kept}; raise --n")
            # y for the refit's prior p(z_c | y), in the model's label order (names the labels the faces lack)
            refit_labels = test.select_labels(model.label_names).labels[has] if args.refit else None
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    z, kl_s = [], []
    with torch.no_grad():
        for start in range(0, len(test), 500):
            q = model.encode(batches.to_float(batches.load(test.images[start:start + 500])).to(model.device))
            z.append(q.mode().cpu())
            kl_s.append(q.kl_standard_normal()[:, model.num_labels:].cpu())
    z = torch.cat(z).numpy().astype(np.float64)
    latent_names = [*model.label_names, *(f"style {j}" for j in range(model.style_dim))]
    rows = probe(z, test.factors, np.asarray(test.labels), test.label_names, num_characteristic=model.num_labels,
                 latent_names=latent_names, names=args.factors, fit=args.fit)
    print(f"{args.checkpoint}: linear probes from E_q[z|x] on {len(test)} synthetic test faces "
          f"(fitted on the first {args.fit:.0%} of the faces each factor is drawn on, R² on the rest)")
    print(format_rows(rows))
    print(format_usage(style_usage(z[:, model.num_labels:], torch.cat(kl_s).numpy().astype(np.float64))))
    if args.regions:
        print(f"\nwhere each label is drawn (up to {args.region_faces} test faces that have it, rendered with and "
              "without it) and how much of it the reconstructions get:")
        print(format_regions(label_regions(model, faces=args.region_faces, data_seed=args.data_seed)))
    if args.stages:
        with_label, names = faces_with(test, args.stages), label_factors(args.stages)
        print(f"\nwhere the encoder loses {args.stages}'s look: held-out ridge R² of its factors from each stage, "
              f"over the {len(with_label)} of {len(test)} test faces that have it")
        if len(with_label) < 20:
            print("too few faces to fit a probe (at least 20); raise --n")
        else:
            stages = encoder_stages(model, test.images[with_label])
            print(format_stage_rows(stage_probes(stages, {k: np.asarray(test.factors[k])[with_label] for k in names},
                                                 names, fit=args.fit)))
    if args.kept:
        seen = label_kept(model, oracle, test.images[has], label=args.kept, resamples=args.resamples,
                          refit=args.refit, labels=refit_labels)
        groups = (kept_groups(args.kept, {k: np.asarray(v)[has] for k, v in test.factors.items()})
                  + label_groups(args.kept, np.asarray(test.labels)[has], test.label_names))
        print()
        print(format_kept(args.kept, seen, groups, len(test), args.resamples))
    if args.added:
        seen = label_added(model, oracle, test.images[lacks], label=args.added)
        print()
        print(format_added(args.added, seen, label_groups(args.added, np.asarray(test.labels)[lacks], test.label_names),
                           len(test)))
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
