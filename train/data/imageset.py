"""ImageSet: images, labels and (for synthetic data) ground-truth factors, indexable and subsettable."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ImageSet:
    """N images (N, H, W, 3) uint8 with labels (N, L) int8 in {1, 0, -1 = unknown} or None.

    ``images`` is the on-disk memmap for a whole split. A subset keeps the memmap and an index
    array: :meth:`take` reads a batch straight from disk, while ``images`` materialises the subset
    in memory on first access.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, label_names: Sequence[str],
                 factors: dict[str, np.ndarray] | None = None, *, name: str = "", index: np.ndarray | None = None,
                 skipped: Sequence[tuple[str, str]] = ()):
        n = len(images) if index is None else len(index)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int8)
            if labels.shape != (n, len(label_names)):
                raise ValueError(f"labels have shape {labels.shape}; expected ({n}, {len(label_names)}) "
                                 f"for {n} images and labels {list(label_names)}")
        self._source = images
        self._index = None if index is None else np.asarray(index, dtype=np.int64)
        self._images = images if index is None else None
        self.labels = labels
        self.label_names = list(label_names)
        self.factors = factors
        self.name = name
        self.skipped = list(skipped)  # (file name, reason) of inputs that could not be read

    @property
    def images(self) -> np.ndarray:
        """(N, H, W, 3) uint8."""
        if self._images is None:
            self._images = np.ascontiguousarray(self._source[self._index])
        return self._images

    @property
    def image_size(self) -> int:
        return int(self._source.shape[1])

    @property
    def is_labelled(self) -> bool:
        return self.labels is not None

    def __len__(self) -> int:
        return len(self._source) if self._index is None else len(self._index)

    def __repr__(self) -> str:
        state = "labelled" if self.is_labelled else "unlabelled"
        return f"ImageSet({self.name!r}, n={len(self)}, size={self.image_size}, {state}, labels={self.label_names})"

    def source_indices(self, idx) -> np.ndarray:
        idx = np.arange(len(self))[idx]
        return idx if self._index is None else self._index[idx]

    def take(self, idx) -> tuple[np.ndarray, np.ndarray | None]:
        """A batch: images (B, H, W, 3) uint8 and labels (B, L) int8 or None, for positions ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        src = self.source_indices(idx)
        order = np.argsort(src, kind="stable")  # sorted reads are faster on a memmap
        images = np.empty((len(src), *self._source.shape[1:]), np.uint8)
        images[order] = self._source[src[order]]
        return images, None if self.labels is None else self.labels[idx]

    def subset(self, indices) -> "ImageSet":
        """The images at ``indices`` (positions in this set), with their labels and factors."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"subset indices must lie in [0, {len(self)}), got {indices.min()}..{indices.max()}")
        indices = indices % max(len(self), 1)
        factors = None if self.factors is None else {k: v[indices] for k, v in self.factors.items()}
        labels = None if self.labels is None else self.labels[indices]
        return ImageSet(self._source, labels, self.label_names, factors, name=self.name,
                        index=self.source_indices(indices), skipped=self.skipped)

    def without_labels(self) -> "ImageSet":
        """The same images, labels hidden (``labels is None``)."""
        out = self.subset(np.arange(len(self)))
        out.labels = None
        return out

    def select_labels(self, names: Sequence[str]) -> "ImageSet":
        """The same images with only the labels ``names``, in that order."""
        missing = [n for n in names if n not in self.label_names]
        if missing:
            raise ValueError(f"unknown labels {missing}; this dataset has {self.label_names}")
        if not names:
            raise ValueError("label_names must name at least one label")
        cols = [self.label_names.index(n) for n in names]
        out = ImageSet(self._source, None if self.labels is None else self.labels[:, cols], list(names), self.factors,
                       name=self.name, index=self._index, skipped=self.skipped)
        return out
