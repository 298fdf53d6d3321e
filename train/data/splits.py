"""Semi-supervised splits: a labelled fraction, picked deterministically from a seed."""
from __future__ import annotations

import math

import numpy as np

from .imageset import ImageSet


def semi_supervised(ds: ImageSet, frac: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(labelled, unlabelled): a fraction ``frac`` of the rows that carry labels keeps them.

    A row carries labels when at least one of its cells is known (0 or 1); a partly labelled row
    keeps its unknown cells as -1, which the objective enumerates (``ccvae.objective.partial``).
    The labelled rows are the first ``round(frac * M)`` (at least 1 when frac > 0 and M > 0) of a
    permutation drawn from ``seed`` of the M rows that carry labels; the others, and every row with
    no known cell (an image the CSV does not list) whatever frac, go to the unlabelled side, whose
    ``labels`` is None. On a fully labelled dataset M = N: the fraction of all images.
    """
    if not 0.0 <= frac <= 1.0 or math.isnan(frac):
        raise ValueError(f"frac must lie in [0, 1], got {frac}")
    if ds.labels is None:
        raise ValueError(f"{ds.name or 'this dataset'} has no labels to split")
    known = np.flatnonzero((ds.labels >= 0).any(axis=1))           # rows with some label known
    k = int(round(frac * len(known)))
    k = min(max(k, 1 if frac > 0 else 0), len(known))
    order = np.random.default_rng([seed, 0x5E1]).permutation(len(known))
    labelled = np.sort(known[order[:k]])
    mask = np.ones(len(ds), bool)
    mask[labelled] = False
    unlabelled = ds.subset(np.flatnonzero(mask))
    unlabelled.labels = None
    return ds.subset(labelled), unlabelled
