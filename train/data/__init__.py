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
from .celeba import framing as celeba_framing
from .synthetic import FACTOR_NAMES, FRAMING as SYNTHETIC_FRAMING, LABEL_NAMES, load_synthetic, render_face, sample_factors

DATASET_NAMES = ("synthetic", "celeba", "folder")

__all__ = ["ATTRIBUTES", "DATASET_NAMES", "DatasetError", "FACTOR_NAMES", "ImageSet", "LABEL_NAMES", "PAPER_LABELS",
           "framing", "load_dataset", "render_face", "sample_factors", "semi_supervised"]


ALIGN_CHOICES = ("synthetic", "celeba", "celeba-crop")  # framings a folder can be aligned to, by name


def framing(name: str, *, center_crop: bool = False, align=None) -> dict | None:
    """Where dataset ``name``'s images have their eyes, as the model's ``framing`` config entry
    (``ccvae.photos``): known for the synthetic faces and CelebA (center_crop as given to
    load_dataset); for a folder, the framing it was aligned to (``align``: a framing dict or one
    of ALIGN_CHOICES), or None when it was centre-cropped (unknown)."""
    if name == "synthetic":
        return dict(SYNTHETIC_FRAMING)
    if name == "celeba":
        return celeba_framing(center_crop=center_crop)
    if name == "folder":
        return named_framing(align) if isinstance(align, str) else None if align is None else dict(align)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")


def named_framing(name: str) -> dict:
    """The framing called ``name`` (ALIGN_CHOICES): the synthetic faces', CelebA's (resized whole) or
    CelebA's centre-cropped one."""
    if name not in ALIGN_CHOICES:
        raise ValueError(f"unknown framing {name!r}; expected one of {ALIGN_CHOICES}")
    return framing("synthetic") if name == "synthetic" else celeba_framing(center_crop=name == "celeba-crop")


def load_dataset(name: str, split: str = "train", *, root=None, labels_csv=None, label_names=None,
                 image_size: int = 64, seed: int = 0, limit: int | None = None, cache_dir=None,
                 center_crop: bool = False, align=None, progress: bool = True) -> ImageSet:
    """A split of a dataset as an ImageSet, built into the on-disk cache on first use.

    name: "synthetic" (rendered; ``seed`` picks the faces), "celeba" (``root`` = the CelebA folder)
    or "folder" (``root`` = images, ``labels_csv`` = their labels). ``label_names`` selects and
    orders labels (default: all synthetic labels / the paper's 18 CelebA labels / every CSV column).
    ``limit`` keeps the first N images of the split. ``align`` (folder only): a framing dict or a
    name in ALIGN_CHOICES to align each photo's face to (``ccvae.photos.align``); the model trained
    on it then takes ``framing("folder", align=align)``.
    """
    if align is not None and name != "folder":
        raise ValueError(f"align= applies to photos in a folder; {name} images are already framed")
    if name == "synthetic":
        if root is not None or labels_csv is not None or center_crop:
            raise ValueError("synthetic faces take no root, labels_csv or center_crop")
        ds = load_synthetic(split, image_size=image_size, seed=seed, limit=limit, cache_dir=cache_dir, progress=progress)
        return ds if label_names is None else ds.select_labels(list(label_names))
    if name == "celeba":
        if root is None:
            raise DatasetError("celeba needs --root (root=), the folder holding img_align_celeba/ and the list_*.txt files")
        return load_celeba(root, split, label_names=label_names, image_size=image_size, center_crop=center_crop,
                           limit=limit, cache_dir=cache_dir, progress=progress)
    if name == "folder":
        if root is None or labels_csv is None:
            raise DatasetError("a folder dataset needs its images (--root DIR, root=) and its CSV of labels "
                               "(--labels FILE.csv, labels_csv=; file,<label>,... with 0/1/empty)")
        return load_folder(root, labels_csv, split, label_names=label_names, image_size=image_size, limit=limit,
                           cache_dir=cache_dir, progress=progress, align=framing(name, align=align))
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
