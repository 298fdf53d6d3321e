"""Datasets for CCVAE: synthetic faces with ground truth, CelebA, and a folder of the user's images.

    from train.data import load_dataset, semi_supervised
    ds = load_dataset("synthetic", "train", limit=1000)      # ds.images (N, 64, 64, 3) uint8 memmap
    labelled, unlabelled = semi_supervised(ds, 0.06, seed=0)  # unlabelled.labels is None
    x, y = labelled.take(batch_indices)                       # (B, 64, 64, 3) uint8, (B, L) int8

A subset (such as each side of a semi-supervised split) keeps the split's memmap and an index:
``take`` reads a batch from disk, while ``.images`` copies the whole subset into memory once.
"""
from __future__ import annotations

from .celeba import ATTRIBUTES, PAPER_LABELS, DatasetError, load_celeba
from .folder import load_folder
from .imageset import ImageSet
from .splits import semi_supervised
from .synthetic import FACTOR_NAMES, LABEL_NAMES, load_synthetic, render_face, sample_factors

DATASET_NAMES = ("synthetic", "celeba", "folder")

__all__ = ["ATTRIBUTES", "DATASET_NAMES", "DatasetError", "FACTOR_NAMES", "ImageSet", "LABEL_NAMES", "PAPER_LABELS",
           "load_dataset", "render_face", "sample_factors", "semi_supervised"]


def load_dataset(name: str, split: str = "train", *, root=None, labels_csv=None, label_names=None,
                 image_size: int = 64, seed: int = 0, limit: int | None = None, cache_dir=None,
                 center_crop: bool = False, progress: bool = True) -> ImageSet:
    """A split of a dataset as an ImageSet, built into the on-disk cache on first use.

    name: "synthetic" (rendered; ``seed`` picks the faces), "celeba" (``root`` = the CelebA folder)
    or "folder" (``root`` = images, ``labels_csv`` = their labels). ``label_names`` selects and
    orders labels (default: all synthetic labels / the paper's 18 CelebA labels / every CSV column).
    ``limit`` keeps the first N images of the split.
    """
    if name == "synthetic":
        if root is not None or labels_csv is not None or center_crop:
            raise ValueError("synthetic faces take no root, labels_csv or center_crop")
        ds = load_synthetic(split, image_size=image_size, seed=seed, limit=limit, cache_dir=cache_dir, progress=progress)
        return ds if label_names is None else ds.select_labels(list(label_names))
    if name == "celeba":
        if root is None:
            raise DatasetError("celeba needs root=, the folder holding img_align_celeba/ and the list_*.txt files")
        return load_celeba(root, split, label_names=label_names, image_size=image_size, center_crop=center_crop,
                           limit=limit, cache_dir=cache_dir, progress=progress)
    if name == "folder":
        if root is None or labels_csv is None:
            raise DatasetError("folder needs root= (the images) and labels_csv= (file,<label>,... with 0/1/empty)")
        return load_folder(root, labels_csv, split, label_names=label_names, image_size=image_size, limit=limit,
                           cache_dir=cache_dir, progress=progress)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
