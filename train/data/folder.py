"""The user's own images: a folder, and a CSV of labels for some of them.

Every image file under the folder is used (``IMAGE_SUFFIXES``, hidden files and folders left out).
The CSV's first column is a file name (relative to the folder), its header names the labels, its
cells are 0, 1, or empty (unknown). A row gives the labels it has: fully labelled, partly
labelled (some cells empty) or not at all (every cell empty); an image the CSV does not list is
unlabelled. Labels are (N, L) int8 in {1, 0, -1 unknown}.

The CSV is checked as a whole before anything is decoded: every problem (a cell that is not 0, 1
or empty, a row of the wrong width, a file listed twice, a listed file that is not there or is not
an image) is reported at once, each with its line, in one DatasetError. Images the CSV does not
list and that cannot be decoded are reported by name, counted and skipped while the cache is
built, so no epoch meets them.

With ``align`` (a framing, e.g. ``framing("celeba")`` from train.data), each image's face is found
and cropped so that its eyes land where that framing has them (``ccvae.photos.align``); images
without a face are centre-cropped, and counted. Without it, the largest centred square is kept.

There is no official split: a file belongs to "val" or "test" (5% each) by a hash of its name,
to "train" otherwise; "all" takes every file.
"""
from __future__ import annotations

import csv
import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from .celeba import DatasetError

FOLDER_SPLITS = ("train", "val", "test", "all")
NO_FACE = "no face found: centre-cropped"  # not an error: the image is kept
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_LISTED = 40  # problems of a CSV listed in its error; the rest are counted


def _normal(name: str) -> str:
    """A file name as the CSV and the folder scan both give it: relative, with forward slashes."""
    return os.path.normpath(name.strip().replace("\\", "/")).replace(os.sep, "/")


def scan_images(root: Path) -> list[str]:
    """The image files under ``root`` (by suffix, hidden ones left out), relative, sorted."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        found += [_normal(str(rel / n)) for n in names
                  if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found)


def _not_an_image(path: Path) -> str | None:
    """Why ``path`` (which exists) is not an image Pillow can open, from its header; None if it is."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return "is a folder, not an image"
    try:
        with Image.open(path):
            return None
    except UnidentifiedImageError:
        return "is not an image (Pillow does not recognise its contents)"
    except OSError as e:
        return f"cannot be read: {e}"


def read_labels_csv(path: Path, root: Path | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """(file names, (N, L) int8 in {1, 0, -1 unknown}, label names) of the CSV at ``path``.

    With ``root`` every listed file is also checked to exist there and to be an image. All the
    problems found are raised together in one DatasetError, one line each with its CSV line.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"labels file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"labels file {path} cannot be read as UTF-8 text: {e}") from None
    lines = text.splitlines()  # \n, \r\n (Windows) and \r alike
    try:
        dialect = csv.Sniffer().sniff(lines[0] if lines else ",", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]  # (line number, cells)
    if len(rows) < 1 or len(rows[0][1]) < 2:
        raise DatasetError(f"{path}: expected a header 'file,<label>,<label>...' with at least one label column, "
                           f"got {rows[0][1] if rows else 'an empty file'}")
    header = [c.strip() for c in rows[0][1]]
    names = header[1:]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise DatasetError(f"{path}: label names in the header must be non-empty and distinct, got {names}")
    problems: list[str] = []
    files, values, first_line = [], [], {}
    for line, row in rows[1:]:
        if len(row) != len(header):
            problems.append(f"line {line}: {len(row)} columns, but the header has {len(header)} ({','.join(header)})")
            continue
        file = _normal(row[0]) if row[0].strip() else ""
        if not file:
            problems.append(f"line {line}: no file name in the first column")
            continue
        cells = np.full(len(names), -1, np.int8)
        for j, cell in enumerate(row[1:]):
            cell = cell.strip()
            if cell in ("0", "1"):
                cells[j] = int(cell)
            elif cell:
                problems.append(f"line {line}, column {names[j]!r}: value {cell!r}; expected 0, 1 or empty (unknown)")
        if file in first_line:
            problems.append(f"line {line}: {file} is listed again (first on line {first_line[file]})")
            continue
        first_line[file] = line
        if root is not None:
            if not (root / file).exists():
                problems.append(f"line {line}: {file} not found in {root}")
            elif (why := _not_an_image(root / file)) is not None:
                problems.append(f"line {line}: {file} {why}")
        files.append(file)
        values.append(cells)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DatasetError(f"{path}: {len(problems)} problem(s); fix them all, then run again:\n  "
                           + "\n  ".join(problems[:MAX_LISTED]) + more)
    return files, np.asarray(values, np.int8).reshape(len(files), len(names)), names


def folder_table(root: Path, labels_csv: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, labels (N, L) int8 in {1, 0, -1}, label names): the CSV's rows in its order (checked
    against ``root``), then every image under ``root`` it does not list, unlabelled."""
    files, values, names = read_labels_csv(labels_csv, root)
    listed = set(files)
    unlisted = [f for f in scan_images(root) if f not in listed]
    return files + unlisted, np.concatenate([values, np.full((len(unlisted), len(names)), -1, np.int8)]), names


def split_of(file: str) -> str:
    """"train" / "val" / "test" (90/5/5) from a stable hash of the file name."""
    h = int.from_bytes(hashlib.sha1(file.encode()).digest()[:4], "big") % 100
    return "val" if h < 5 else "test" if h < 10 else "train"


def _decode(job) -> tuple[int, str | None]:
    from ccvae.images import load_image
    from ccvae.photos import align_source

    out_path, k, file, size, framing = job
    try:
        if framing is None:
            arr = np.asarray(load_image(file, size=size), dtype=np.uint8)
        else:
            aligned = align_source(file, framing, size=size)
            arr = np.asarray(aligned.image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        return k, str(e) or type(e).__name__
    images = np.load(out_path, mmap_mode="r+")
    images[k] = arr
    return k, None if framing is None or aligned.has_face else NO_FACE


def load_folder(root, labels_csv, split: str = "all", *, label_names=None, image_size: int = 64,
                limit: int | None = None, cache_dir=None, progress: bool = True, workers: int | None = None,
                align=None):
    """Every image under ``root`` as an ImageSet, labelled by ``labels_csv`` where it lists them
    (module docstring); unreadable images skipped and named. align: a framing to align each face
    to, or None for centred squares. ``ds.files`` names each row's file."""
    from ccvae.photos import check_framing
    from . import cache
    from .celeba import _run
    from .imageset import ImageSet

    if split not in FOLDER_SPLITS:
        raise DatasetError(f"unknown split {split!r} for a folder dataset; expected one of {FOLDER_SPLITS}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist")
    if labels_csv is None:
        raise DatasetError("a folder dataset needs its CSV of labels (file,<label>,...): --labels FILE.csv")
    framing = None if align is None else check_framing(align)
    files, values, names = folder_table(root, Path(labels_csv).expanduser())
    rows = [i for i, f in enumerate(files) if split == "all" or split_of(f) == split]
    if limit is not None:
        rows = rows[:int(limit)]

    def stamp(f):
        try:
            st = (root / f).stat()
            return [f, st.st_size, st.st_mtime_ns]
        except OSError:
            return [f, None, None]

    spec = {"dataset": "folder", "root": str(root.resolve()), "split": split, "size": image_size,
            "csv": hashlib.sha256(Path(labels_csv).read_bytes()).hexdigest(),
            "files": cache.cache_key({"stamps": [stamp(files[i]) for i in rows]}), "version": 2}
    if framing is not None:
        spec["align"] = framing  # only when set: caches of centre-cropped folders keep their key
    path = cache.entry_path(cache_dir, "folder", split, spec)
    if not cache.is_complete(path):
        tmp = cache.begin(path)
        try:
            full = cache.new_images(tmp, len(rows), image_size)
            full.flush()
            jobs = [(tmp / "images.npy", k, root / files[i], image_size, framing) for k, i in enumerate(rows)]
            results = _run(_decode, jobs, progress, f"reading {root.name}", workers)
            bad = [(k, err) for k, err in results if err != NO_FACE]
            no_face = [files[rows[k]] for k, err in results if err == NO_FACE]
            skipped = [(files[rows[k]], err) for k, err in bad]
            keep = np.setdiff1d(np.arange(len(rows)), [k for k, _ in bad])
            if bad:
                # Compact the good rows into the final array.
                good = np.asarray(full)[keep]
                del full
                os.remove(tmp / "images.npy")
                out = cache.new_images(tmp, len(keep), image_size)
                out[:] = good
                out.flush()
                del out
            cache.commit(tmp, path, labels=values[np.asarray(rows, dtype=np.int64)[keep]] if len(rows) else values[:0],
                         meta={**spec, "label_names": names, "skipped": skipped, "no_face": no_face,
                               "files": [files[rows[k]] for k in keep]})
        except BaseException:
            cache.abort(tmp)
            raise
    images, labels, _, meta = cache.open_entry(path)
    skipped = [tuple(s) for s in meta["skipped"]]
    if skipped:
        listed = "; ".join(f"{f}: {why}" for f, why in skipped[:10])
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) of {len(rows)} in {root}: {listed}"
                      f"{' ...' if len(skipped) > 10 else ''}", stacklevel=2)
    no_face = meta.get("no_face", [])
    if no_face:
        warnings.warn(f"no face found in {len(no_face)} of {len(rows)} images in {root} (centre-cropped instead): "
                      f"{'; '.join(no_face[:10])}{' ...' if len(no_face) > 10 else ''}", stacklevel=2)
    ds = ImageSet(images, labels, names, name=f"folder/{root.name}/{split}", skipped=skipped)
    if label_names is not None:
        ds = ds.select_labels(list(label_names))
    ds.files = meta["files"]  # file name of each row
    return ds
