"""Semi-supervised splits: a labelled fraction, picked deterministically from a seed."""
from __future__ import annotations

import math

import numpy as np

from .imageset import ImageSet


def semi_supervised(ds: ImageSet, frac: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(labelled, unlabelled): a fraction ``frac`` of ``ds`` keeps its labels, the rest has none.

    The labelled rows are the first ``round(frac * N)`` (at least 1 when frac > 0 and some row is
    fully labelled) of a permutation drawn from ``seed``, among rows whose labels are all known;
    rows with an unknown cell always go to the unlabelled side, whose ``labels`` is None.
    """
    if not 0.0 <= frac <= 1.0 or math.isnan(frac):
        raise ValueError(f"frac must lie in [0, 1], got {frac}")
    if ds.labels is None:
        raise ValueError(f"{ds.name or 'this dataset'} has no labels to split")
    known = np.flatnonzero((ds.labels >= 0).all(axis=1))           # rows with every label known
    k = int(round(frac * len(ds)))
    k = min(max(k, 1 if frac > 0 else 0), len(known))
    order = np.random.default_rng([seed, 0x5E1]).permutation(len(known))
    labelled = np.sort(known[order[:k]])
    mask = np.ones(len(ds), bool)
    mask[labelled] = False
    unlabelled = ds.subset(np.flatnonzero(mask))
    unlabelled.labels = None
    return ds.subset(labelled), unlabelled
