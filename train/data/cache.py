"""The on-disk cache: a rendered or decoded split as uint8 .npy files, memory-mapped on load.

A cache entry is a folder ``<cache_dir>/<dataset>-<split>-<key>/`` holding ``images.npy``
(N, H, W, 3) uint8, ``labels.npy`` (N, L) int8, optionally ``factors.npy`` (N, F) float32, and
``meta.json``. ``key`` hashes everything that changes the pixels or labels. An entry is written
into a temporary folder and renamed into place, so an interrupted run never leaves a partial
entry where a finished one is expected.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np


def default_cache_dir() -> Path:
    """``$CCVAE_CACHE``, else ``~/.cache/ccvae``."""
    env = os.environ.get("CCVAE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ccvae"


def cache_key(spec: dict) -> str:
    """A short stable hash of a JSON-serialisable spec."""
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def entry_path(cache_dir: Path | None, name: str, split: str, spec: dict) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"{name}-{split}-{cache_key(spec)}"


def is_complete(path: Path) -> bool:
    return (path / "meta.json").is_file() and (path / "images.npy").is_file() and (path / "labels.npy").is_file()


def begin(path: Path) -> Path:
    """A fresh temporary folder beside ``path`` to write an entry into."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    return tmp


def new_images(tmp: Path, n: int, size: int) -> np.memmap:
    """A writable (n, size, size, 3) uint8 memmap inside the temporary folder."""
    return np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))


def commit(tmp: Path, path: Path, *, labels: np.ndarray, meta: dict, factors: np.ndarray | None = None) -> None:
    """Finish the entry in ``tmp`` and move it to ``path`` (another process may have won: fine)."""
    np.save(tmp / "labels.npy", labels)
    if factors is not None:
        np.save(tmp / "factors.npy", factors)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    try:
        os.replace(tmp, path)
    except OSError:
        if not is_complete(path):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def abort(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def open_entry(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(images memmap (N, H, W, 3) uint8, labels (N, L) int8, factors (N, F) or None, meta)."""
    images = np.load(path / "images.npy", mmap_mode="r")
    labels = np.load(path / "labels.npy")
    factors = np.load(path / "factors.npy") if (path / "factors.npy").is_file() else None
    meta = json.loads((path / "meta.json").read_text())
    if images.dtype != np.uint8 or images.ndim != 4 or len(labels) != len(images):
        raise ValueError(f"cache entry {path} is inconsistent (images {images.shape} {images.dtype}, "
                         f"labels {labels.shape}); delete it to rebuild")
    return images, labels, factors, meta
