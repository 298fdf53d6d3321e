"""Statistics of a label table (N, L) in {0, 1}, with -1 for unknown: which pairs co-occur."""
from __future__ import annotations

import numpy as np


def pair_support(labels: np.ndarray) -> np.ndarray:
    """(L, 2, L, 2) bool: support[i, a, j, b] is True when some row of `labels` (N, L) in {0, 1}
    (-1 = unknown, ignored) has y_i = a and y_j = b. Pairs that never occur mark label
    combinations the data does not contain, such as two exclusive hair colours."""
    y = np.asarray(labels)
    onehot = np.stack([y == 0, y == 1], -1).astype(np.float64)  # (N, L, 2)
    counts = np.einsum("nia,njb->iajb", onehot, onehot)
    return counts > 0


def never_together(labels: np.ndarray) -> np.ndarray:
    """(L, L) bool: True where labels i and j are never both present in a row of `labels` (N, L),
    e.g. two hair colours; the diagonal marks labels never present at all."""
    return ~pair_support(labels)[:, 1, :, 1]


def exclusive_pairs(labels: np.ndarray, label_names, *, min_expected: float = 10.0) -> list[list[str]]:
    """Pairs of labels never present together in `labels` (N, L) in {0, 1} (-1 = unknown)
    although independent labels would put at least `min_expected` rows with both (n_ij p_i p_j,
    over the n_ij rows that know both); at 10 the chance of seeing none by luck is e^-10 per pair.
    Rarer pairs are left out: a few hundred labelled faces miss them by chance (Bald with
    earrings), and an edit must not clear one label for another that merely went unseen."""
    y = np.asarray(labels)
    known = (y >= 0).astype(np.float64)
    present = (y == 1).astype(np.float64)
    p = present.sum(0) / np.maximum(known.sum(0), 1)  # (L,)
    expected = (known.T @ known) * p[:, None] * p[None, :]  # (L, L)
    never = never_together(y) & (expected >= min_expected)
    L = y.shape[1]
    return [[label_names[i], label_names[j]] for i in range(L) for j in range(i + 1, L) if never[i, j]]


def label_counts(labels: np.ndarray | None, n: int | None = None) -> dict[str, float]:
    """How much of a label table (N, L) in {0, 1, -1 unknown} is known: rows fully labelled,
    partly labelled and unlabelled, and the fraction of known cells (labels None: n unlabelled rows)."""
    if labels is None:
        return {"labelled": 0, "partly_labelled": 0, "unlabelled": int(n or 0), "labelled_cells": 0.0}
    known = np.asarray(labels) >= 0
    full, some = known.all(1), known.any(1)
    return {"labelled": int(full.sum()), "partly_labelled": int((some & ~full).sum()),
            "unlabelled": int((~some).sum()), "labelled_cells": float(known.mean()) if known.size else 0.0}


def label_list(values) -> list[str] | None:
    """Label names as any command takes them: "A,B", "A B" or ["A", "B,C"] -> ["A", "B", "C"]."""
    if values is None:
        return None
    words = [values] if isinstance(values, str) else list(values)
    return [name for word in words for name in word.replace(",", " ").split()]
