"""CelebA from a folder the user names: the standard layout, preprocessed once into the cache.

Expected under ``root`` (the layout of the official release, or of the common mirrors):

    img_align_celeba/000001.jpg ...         (or img_align_celeba/img_align_celeba/*.jpg)
    list_attr_celeba.txt  | list_attr_celeba.csv
    list_eval_partition.txt | list_eval_partition.csv
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]
PAPER_LABELS = [  # the 18 labels of Joy et al. (2021)
    "Arched_Eyebrows", "Bags_Under_Eyes", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Eyeglasses", "Heavy_Makeup", "Male", "No_Beard", "Pale_Skin", "Receding_Hairline", "Smiling",
    "Wavy_Hair", "Wearing_Necktie", "Young",
]
PARTITIONS = {"train": 0, "val": 1, "test": 2}
CROP = 148  # side of the centre square kept by center_crop (the aligned crops are 178 x 218)
WHERE = ("CelebA can be obtained from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
         "(Align&Cropped images + Anno + Eval), or from mirrors such as the Kaggle dataset "
         "'jessicali9530/celeba-dataset'")


# Mean eye centres of img_align_celeba (178 x 218 pixels, list_landmarks_align_celeba.txt: about
# (69, 111) and (108, 111), to a pixel or two), and the framing each preprocessing gives them.
ALIGNED_SIZE = (178, 218)
ALIGNED_EYES = ((69.0, 111.0), (108.0, 111.0))


def framing(*, center_crop: bool = False) -> dict:
    """Where CelebA's eyes sit in the model's input (``ccvae.photos`` framing): the whole 178 x 218
    image resized to a square (faces squeezed vertically, aspect 178/218), or, with center_crop,
    its centred 148 x 148 square resized."""
    w, h = ALIGNED_SIZE
    if center_crop:
        left, top = (w - CROP) / 2, (h - CROP) / 2
        eyes = [[(x - left) / CROP, (y - top) / CROP] for x, y in ALIGNED_EYES]
        return {"left_eye": eyes[0], "right_eye": eyes[1], "aspect": 1.0,
                "crop": f"CelebA img_align_celeba ({w}x{h}): the centred {CROP}x{CROP} square, resized"}
    eyes = [[x / w, y / h] for x, y in ALIGNED_EYES]
    return {"left_eye": eyes[0], "right_eye": eyes[1], "aspect": w / h,
            "crop": f"CelebA img_align_celeba ({w}x{h}), resized whole to a square"}


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used as it is; the message says why."""


def find_files(root: Path) -> tuple[Path, Path, Path]:
    """(image folder, attribute file, partition file) under ``root``, or a DatasetError naming what is missing."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"CelebA folder {root} does not exist. {WHERE}")
    images = next((p for p in (root / "img_align_celeba" / "img_align_celeba", root / "img_align_celeba")
                   if p.is_dir() and any(p.glob("*.jpg"))), None)
    attrs = next((p for p in (root / "list_attr_celeba.txt", root / "list_attr_celeba.csv") if p.is_file()), None)
    parts = next((p for p in (root / "list_eval_partition.txt", root / "list_eval_partition.csv") if p.is_file()), None)
    missing = [what for what, p in (("img_align_celeba/*.jpg", images), ("list_attr_celeba.txt (or .csv)", attrs),
                                    ("list_eval_partition.txt (or .csv)", parts)) if p is None]
    if missing:
        raise DatasetError(f"{root} is not a complete CelebA folder: missing {', '.join(missing)}. {WHERE}")
    return images, attrs, parts


def read_attributes(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(file names, (N, 40) int8 of 0/1, attribute names) from list_attr_celeba.txt or .csv."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if path.suffix == ".csv":
        rows = list(csv.reader(text.splitlines()))
        header, body = rows[0][1:], [r for r in rows[1:] if r]
    else:
        lines = [line.split() for line in text.splitlines() if line.strip()]
        if not lines or not lines[0][0].isdigit():
            raise DatasetError(f"{path}: first line should be the image count, got {' '.join(lines[0][:3]) if lines else 'nothing'}")
        header, body = lines[1], lines[2:]
    if len(header) != 40:
        raise DatasetError(f"{path}: expected 40 attribute names in the header, found {len(header)}")
    names, values = [], np.empty((len(body), len(header)), np.int8)
    for i, row in enumerate(body):
        if len(row) != len(header) + 1:
            raise DatasetError(f"{path}: row {i + 1} ({row[0] if row else ''}) has {len(row) - 1} values, expected {len(header)}")
        try:
            v = [int(x) for x in row[1:]]
        except ValueError as e:
            raise DatasetError(f"{path}: row {i + 1} ({row[0]}) holds a non-integer value: {e}") from None
        if any(x not in (-1, 0, 1) for x in v):
            raise DatasetError(f"{path}: row {i + 1} ({row[0]}) holds values other than -1/1")
        names.append(row[0])
        values[i] = np.array(v, np.int8) > 0
    return names, values, header


def read_partition(path: Path) -> dict[str, int]:
    """{file name: 0 train / 1 val / 2 test} from list_eval_partition.txt or .csv."""
    text = Path(path).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(text.splitlines())) if path.suffix == ".csv" else [l.split() for l in text.splitlines()]
    rows = [r for r in rows if r]
    if rows and not rows[0][-1].strip().isdigit():
        rows = rows[1:]  # the CSV header
    try:
        return {r[0]: int(r[1]) for r in rows}
    except (IndexError, ValueError):
        raise DatasetError(f"{path}: expected lines '<file> <0|1|2>'") from None


def _decode(job) -> tuple[int, str | None]:
    """Decode one JPEG into row ``k`` of the cache memmap; returns (k, error or None)."""
    from PIL import Image

    out_path, k, file, size, center_crop = job
    try:
        with Image.open(file) as im:
            im.draft("RGB", (size * 2, size * 2))      # JPEG DCT scaling: decode at >= 2x the target
            im = im.convert("RGB")
            if center_crop:
                w, h = im.size
                side = min(w, h, round(CROP * w / 178))  # the 148-of-178 crop, scaled with any draft
                left, top = (w - side) // 2, (h - side) // 2
                im = im.crop((left, top, left + side, top + side))
            im = im.resize((size, size), Image.LANCZOS)
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        return k, f"{e}"
    images = np.load(out_path, mmap_mode="r+")
    images[k] = arr
    return k, None


def load_celeba(root, split: str = "train", *, label_names=None, image_size: int = 64, center_crop: bool = False,
                limit: int | None = None, cache_dir=None, progress: bool = True, workers: int | None = None):
    """CelebA's official ``split`` as an ImageSet of ``image_size`` squares (resized, or centre-cropped then resized)."""
    from . import cache
    from .imageset import ImageSet

    if split not in PARTITIONS:
        raise DatasetError(f"unknown split {split!r}; expected one of {list(PARTITIONS)}")
    names = list(PAPER_LABELS if label_names is None else label_names)
    unknown = [n for n in names if n not in ATTRIBUTES]
    if unknown:
        raise DatasetError(f"unknown CelebA attributes {unknown}; choose among {ATTRIBUTES}")
    image_dir, attr_file, part_file = find_files(Path(root))
    files, values, header = read_attributes(attr_file)
    partition = read_partition(part_file)
    rows = [i for i, f in enumerate(files) if partition.get(f) == PARTITIONS[split]]
    if limit is not None:
        rows = rows[:int(limit)]
    spec = {"dataset": "celeba", "root": str(Path(root).resolve()), "split": split, "size": image_size,
            "crop": bool(center_crop), "n": len(rows), "files": cache_key_of([files[i] for i in rows]),
            "attr_mtime": os.path.getmtime(attr_file), "part_mtime": os.path.getmtime(part_file), "version": 1}
    path = cache.entry_path(cache_dir, "celeba", split, spec)
    if not cache.is_complete(path):
        tmp = cache.begin(path)
        try:
            cache.new_images(tmp, len(rows), image_size).flush()
            jobs = [(tmp / "images.npy", k, image_dir / files[i], image_size, center_crop) for k, i in enumerate(rows)]
            bad = _run(_decode, jobs, progress, f"preprocessing CelebA {split}", workers)
            if bad:
                shown = ", ".join(f"{files[rows[k]]} ({err})" for k, err in bad[:5])
                raise DatasetError(f"{len(bad)} CelebA images under {image_dir} could not be read: {shown}"
                                   f"{' ...' if len(bad) > 5 else ''}. {WHERE}")
            cache.commit(tmp, path, labels=values[rows], meta={**spec, "label_names": header,
                                                                "files": [files[i] for i in rows]})
        except BaseException:
            cache.abort(tmp)
            raise
    images, labels, _, meta = cache.open_entry(path)
    return ImageSet(images, labels, meta["label_names"], name=f"celeba/{split}").select_labels(names)


def cache_key_of(items) -> str:
    from .cache import cache_key
    return cache_key({"items": list(items)})


def _run(fn, jobs, progress: bool, desc: str, workers: int | None) -> list[tuple[int, str]]:
    """Run ``fn`` (a decode job -> (row, error or None)) over jobs (in a pool when there are many), with a progress bar; the failures."""
    from .synthetic import _bar

    bar = _bar(progress, len(jobs), desc)
    workers = min(os.cpu_count() or 1, 8) if workers is None else max(1, workers)
    bad = []
    if workers <= 1 or len(jobs) < 256:
        results = map(fn, jobs)
        for k, err in results:
            bar.update(1)
            if err:
                bad.append((k, err))
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(workers) as pool:
            for k, err in pool.imap_unordered(fn, jobs, chunksize=64):
                bar.update(1)
                if err:
                    bad.append((k, err))
    bar.close()
    return sorted(bad)
