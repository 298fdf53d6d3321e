"""Diversity against ground truth: what a resample of z_i changes, read by the factor reader.

The synthetic faces record each characteristic's own factors (which glasses: frame shape, size,
thickness, hue, value, tint). For each label with factors of its own (OWN_FACTORS), on the judged
test faces that have the label (the first n of the test split), z_i is resampled R = 16 times
from p(z_i | y_i = v) on the classifier's side as the app resamples it
(`editing.resample_latent(as_edits=True)`: a new black hair clears a brown one), the R faces
decoded, and the factor reader (`train.factor_reader`) reads every factor from them:

    characteristic_coverage_i = mean over the label's readable own factors f of
        spread_f(over the R resamples of a face, averaged over the faces)
        / spread_f(over the test faces with the label)
    style_kept_i = 1 - mean over the readable factors f the label does not own of
        min(1, spread_f(over the R resamples, averaged over the faces that show f)
                / spread_f(over the test faces that show f))

Both spreads are of the reader's readings: of decoded resamples in the numerator, of the real
test images in the denominator (the whole test split given, so the yardstick is what the data has).
coverage 1.0: a resample shows as much variety as the data has; 0: resampling never changes the
characteristic. style_kept 1.0: nothing else moved. Per-factor ratios in style_kept are clipped at
1, so one factor that moves wildly costs at most its share; coverage is not clipped (above 1: more
spread than the data, off the data's range).

The spread of one factor, by kind (the reader's heads, `factor_reader.factor_specs`):
- amounts: the standard deviation (ddof = 1);
- hues and angles: the angular deviation sqrt(2 (1 - rho)) of the unit vectors (cos, sin) of the
  readings, with rho^2 = max(0, (n Rbar^2 - 1) / (n - 1)) the small-sample correction of the mean
  resultant length Rbar (uniform angles then spread ~0.95 sqrt 2 over 16 readings, against ~0.88
  sqrt 2 uncorrected, and sqrt 2 over many faces; amounts' ddof-1 std is ~0.98 sigma at 16);
- kinds (hat style, earring style, hair class): of the kinds the data shows among the reference
  faces (K of them, true values), how many a face's resamples reach beyond one:
  (k - 1) / (K - 1), k the number of those kinds among the R readings; the reference spread is
  then 1 by definition. (The issue's share k / K gives 1/K to a model whose resamples never
  change the kind; (k - 1) / (K - 1) scores that 0, like an amount that never moves.) A factor
  whose data shows a single kind has no spread and is skipped.

Readable: a factor counts only where the reader explains at least `factor_reader.READABLE` of its
variation (`factor_reader.quality`) on blurred copies of the same reference faces (for an own
factor, the test faces with the label; otherwise those that show the factor); the factors left
out are listed per label (`characteristic_factors`). A metric over a factor the reader cannot
read would measure the reader's noise.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ccvae import CCVAE, editing

from . import batches
from .factor_reader import READABLE, FactorReader, quality, shown_mask
from .oracle import degrade, to_tensor

# label -> (the label value whose faces show the characteristic, the factors it owns). Every factor
# that FACTOR_SHOWN_WHEN draws under (label, 1) belongs to the label; besides those:
# - No_Beard owns the beard factors, shown when it is 0: its characteristic is resampled under
#   y = 0, on the faces with a beard;
# - labels whose characteristic is a factor every face shows: Smiling the smile's curvature and
#   width (the generator's "curvature and width of a smile"), Narrow_Eyes the eye opening,
#   each hair colour the hue and shade within its class, Pale_Skin the skin tone;
# - hair_class belongs to no label: a hair colour label fixes it (one kind in its data, no
#   spread), and a resample that changes it changes another label; it counts in style_kept.
# Bald (hair_length shows only when Bald is 0, the side its resample does not draw) and Male own
# nothing and get no coverage.
_EXTRA_OWN = {
    "No_Beard": (0, ("beard_length", "beard_shade")),
    "Smiling": (1, ("smile", "mouth_width")),
    "Narrow_Eyes": (1, ("eye_open",)),
    "Black_Hair": (1, ("hair_hue", "hair_shade")),
    "Blond_Hair": (1, ("hair_hue", "hair_shade")),
    "Brown_Hair": (1, ("hair_hue", "hair_shade")),
    "Pale_Skin": (1, ("skin_tone",)),
}


def own_factors() -> dict[str, tuple[int, tuple[str, ...]]]:
    """OWN_FACTORS: label -> (value, factors), in LABEL_NAMES order (see the table above)."""
    from .data.synthetic import FACTOR_NAMES, FACTOR_SHOWN_WHEN, LABEL_NAMES

    out = {}
    for label in LABEL_NAMES:
        owned = tuple(f for f in FACTOR_NAMES if FACTOR_SHOWN_WHEN.get(f) == (label, 1))
        if label in _EXTRA_OWN:
            out[label] = _EXTRA_OWN[label]
        elif owned:
            out[label] = (1, owned)
    return out


def spread(spec: Mapping, values: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """The spread of an amount's or an angle's readings along `axis` (see the module docstring): the
    std (ddof 1) for amounts, the corrected angular deviation for hues and angles. Kinds have
    `kind_spread` instead."""
    v = np.moveaxis(np.asarray(values, np.float64), axis, -1)
    n = v.shape[-1]
    if spec["kind"] == "linear":
        return v.std(-1, ddof=1) if n > 1 else np.zeros(v.shape[:-1])
    if spec["kind"] == "circular":
        a = v * (2 * np.pi / spec["period"])
        rbar2 = np.cos(a).mean(-1) ** 2 + np.sin(a).mean(-1) ** 2
        rho = np.sqrt(np.clip((n * rbar2 - 1) / max(n - 1, 1), 0.0, 1.0)) if n > 1 else np.ones(v.shape[:-1])
        return np.sqrt(2 * (1 - rho))
    raise ValueError(f"spread of kind {spec['kind']!r}: use kind_spread for categorical factors")


def kind_spread(readings: np.ndarray, data_kinds: Sequence[int]) -> np.ndarray:
    """(k - 1) / (K - 1) per row of readings (..., R): k = how many of the K kinds in `data_kinds`
    occur among the row's R readings (readings outside them count for nothing). K >= 2."""
    data_kinds = sorted({int(k) for k in data_kinds})
    if len(data_kinds) < 2:
        raise ValueError(f"a spread of kinds needs at least two kinds in the data, got {data_kinds}")
    r = np.asarray(readings).round().astype(int)
    k = sum((r == kind).any(-1).astype(np.int64) for kind in data_kinds)
    return np.maximum(k - 1, 0) / (len(data_kinds) - 1)


def _ratio(spec, resampled, reference, true_reference):
    """mean over faces of the spread over resamples / spread over the reference faces; None when the
    reference has no spread. resampled (n, R), reference (M,) readings, true_reference (M,) truth."""
    if spec["kind"] == "categorical":
        kinds = np.unique(np.round(true_reference).astype(int))
        if len(kinds) < 2 or not len(resampled):
            return None
        return float(kind_spread(resampled, kinds).mean())
    ref = float(spread(spec, reference))
    if not ref > 1e-8 or not len(resampled):
        return None
    return float(spread(spec, resampled).mean() / ref)


@torch.no_grad()
def characteristic_metrics(model: CCVAE, reader: FactorReader, images: np.ndarray, labels: np.ndarray,
                           factors: Mapping[str, np.ndarray], *, n: int = 500, resamples: int = 16,
                           batch_size: int = 512, seed: int = 0, readable: float = READABLE) -> dict:
    """characteristic_coverage and style_kept per label with own factors (module docstring).

    images (N, S, S, 3) uint8: the test split (all of it serves as the reference; its first n
    faces are resampled); labels (N, L) in model.label_names order; factors: name -> (N,) true
    values (`ImageSet.factors`), for the readability check and the kinds the data shows.
    """
    if resamples < 2:
        raise ValueError(f"resamples must be at least 2 to have a spread, got {resamples}")
    labels = np.asarray(labels)
    if labels.shape != (len(images), model.num_labels):
        raise ValueError(f"labels have shape {labels.shape}; expected ({len(images)}, {model.num_labels}) "
                         f"for {len(images)} images and the model's labels")
    specs, names = reader.specs, reader.factor_names
    missing = [f for f in names if f not in factors]
    if missing:
        raise ValueError(f"the true factors lack {missing}, which the reader reads")
    truth = np.stack([np.asarray(factors[f], np.float64) for f in names], 1)                   # (N, F)
    shown = shown_mask(labels, model.label_names, names)                                       # (N, F)
    x = to_tensor(images)
    ref = reader.read(x).cpu().numpy()                                                         # (N, F)
    ref_blur = reader.read(degrade(x, torch.Generator().manual_seed(seed + 1))).cpu().numpy()
    del x

    def is_readable(j, rows):
        return quality(specs[j], ref_blur[rows, j], truth[rows, j]) >= readable

    readable_all = [is_readable(j, shown[:, j]) for j in range(len(names))]
    g = torch.Generator(device=model.device).manual_seed(seed)
    total = min(n, len(images))
    coverage, kept, details = {}, {}, {}
    for label, (value, owned) in own_factors().items():
        if label not in model.label_names:
            continue
        col = model.label_index(label)
        with_label = labels[:, col] == value                                                   # reference faces
        faces = np.nonzero(with_label[:total])[0]
        owned_j = [names.index(f) for f in owned if f in names]
        if not len(faces) or not owned_j:
            continue
        # resample: (n_l * R, D) latents, decoded and read in batches
        z = torch.cat([editing.encode(model, batches.to_float(batches.load(images[faces[a:a + batch_size]])))
                       for a in range(0, len(faces), batch_size)])
        zr = editing.resample_latent(model, z.repeat_interleave(resamples, 0), col, present=bool(value),
                                     generator=g, as_edits=True)
        read = torch.cat([reader.read(editing.decode(model, zr[a:a + batch_size])).cpu()
                          for a in range(0, len(zr), batch_size)]).numpy().reshape(len(faces), resamples, -1)
        own, unreadable = {}, []
        for j in owned_j:
            rows = with_label & shown[:, j]
            if not is_readable(j, rows):
                unreadable.append(names[j])
                continue
            r = _ratio(specs[j], read[:, :, j], ref[rows, j], truth[rows, j])
            if r is not None:
                own[names[j]] = r
        moved = {}
        for j in range(len(names)):
            if j in owned_j or not readable_all[j]:
                continue
            on = shown[faces, j]                                                               # faces that show f
            r = _ratio(specs[j], read[on, :, j], ref[shown[:, j], j], truth[shown[:, j], j])
            if r is not None:
                moved[names[j]] = min(r, 1.0)
        if own:
            coverage[label] = float(np.mean(list(own.values())))
        if moved:
            kept[label] = float(1.0 - np.mean(list(moved.values())))
        details[label] = {"faces": int(len(faces)), "own": own, "own_unreadable": unreadable,
                          "moved": dict(sorted(moved.items(), key=lambda kv: -kv[1])[:5])}   # the five that moved most
    return {
        "characteristic_coverage": coverage,
        "characteristic_coverage_mean": float(np.mean(list(coverage.values()))) if coverage else None,
        "style_kept": kept,
        "style_kept_mean": float(np.mean(list(kept.values()))) if kept else None,
        "characteristic_factors": details,
        "factors_unreadable": [f for f, ok in zip(names, readable_all) if not ok],
        "characteristic_resamples": resamples,
    }
