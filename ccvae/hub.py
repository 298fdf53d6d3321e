"""Checkpoint I/O in the Hugging Face Hub layout, strictly.

A model folder holds config.json (every constructor argument, plus "format_version"),
model.safetensors (the state dict) and README.md (the model card). No pickles: loading never
unpickles anything, and every mismatch is an error that names what is wrong.
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from .model import CCVAE

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is; the message says why."""


def save(model: "CCVAE", directory: Path) -> None:
    """Write config.json and model.safetensors into directory (atomically, file by file)."""
    from .model import FORMAT_VERSION

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic(directory / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt"}))
    config = {**model.config, "format_version": FORMAT_VERSION}
    _atomic(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def model_dir(path: str | Path) -> Path:
    """The model folder at ``path``: the folder itself when it holds config.json, else the model/
    folder of a training run (RUN/model/config.json). A folder with neither is a CheckpointError."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path} holds no model: " + ("it is a file, not a folder" if path.exists() else
                                                             "no such folder"))
    if not (path / CONFIG_NAME).is_file() and (path / "model" / CONFIG_NAME).is_file():
        return path / "model"
    if not (path / CONFIG_NAME).is_file():
        raise CheckpointError(f"{path} holds no model: expected {path / CONFIG_NAME} (a model folder) or "
                              f"{path / 'model' / CONFIG_NAME} (a training run)")
    return path


def resolve_files(name_or_path: str | Path, **download_kwargs) -> tuple[Path, Path]:
    """(config.json, model.safetensors) from a local model or run folder (`model_dir`), or
    downloaded from the Hub."""
    path = Path(name_or_path)
    if path.is_dir():
        path = model_dir(path)
        missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (path / n).is_file()]
        if missing:
            raise CheckpointError(f"{path} is not a CCVAE model folder: missing {', '.join(missing)}")
        return path / CONFIG_NAME, path / WEIGHTS_NAME
    if path.exists() or str(name_or_path).startswith((".", "/")) or str(name_or_path).count("/") > 1:
        raise CheckpointError(f"{name_or_path} is neither a model folder nor a Hugging Face Hub id (user/name)")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return tuple(Path(hf_hub_download(repo_id=str(name_or_path), filename=n, **download_kwargs))
                     for n in (CONFIG_NAME, WEIGHTS_NAME))  # type: ignore[return-value]
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        raise CheckpointError(f"could not fetch {name_or_path!r} from the Hugging Face Hub: {e}") from e


def read_config(config_file: Path, cls) -> dict:
    """The constructor arguments in config_file, checked against cls.__init__."""
    from .model import FORMAT_VERSION, REMOVED_CONFIG_KEYS

    try:
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_file} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} must hold a JSON object, got {type(config).__name__}")
    version = config.pop("format_version", None)
    if version is None:
        raise CheckpointError(f"{config_file} has no format_version (expected {FORMAT_VERSION})")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{config_file} has format_version {version}; this ccvae reads version {FORMAT_VERSION}")
    params = inspect.signature(cls.__init__).parameters
    allowed = {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY}
    removed = sorted(set(config) & set(REMOVED_CONFIG_KEYS) - allowed)
    if removed:
        raise CheckpointError(f"{config_file} has the entry {removed[0]!r}, which this ccvae no longer reads ("
                              f"{REMOVED_CONFIG_KEYS[removed[0]]}); retrain the model with the current recipe, or "
                              f"delete the entry from config.json if the model was trained without it")
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise CheckpointError(f"{config_file} has unknown entries {unknown}; allowed: {sorted(allowed)}")
    required = {n for n in allowed if params[n].default is inspect.Parameter.empty}
    missing = sorted(required - set(config))
    if missing:
        raise CheckpointError(f"{config_file} lacks required entries {missing}")
    return config


def load(cls, name_or_path, *, map_location="cpu", **download_kwargs) -> "CCVAE":
    """Build cls from config.json and load model.safetensors into it, strictly."""
    config_file, weights_file = resolve_files(name_or_path, **{k: v for k, v in download_kwargs.items() if v is not None})
    config = read_config(config_file, cls)
    try:
        model = cls(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{config_file} describes an invalid model: {e}") from e
    try:
        state = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_file} is damaged or not a safetensors file: {e}") from e
    check_state_dict(model.state_dict(), state, weights_file)
    model.load_state_dict(state, strict=True)
    model._hub_mixin_config = dict(config)
    return model.to(map_location)


def check_state_dict(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    problems = []
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"missing tensors {missing}")
    if extra:
        problems.append(f"unexpected tensors {extra}")
    for k in sorted(set(expected) & set(found)):
        if expected[k].shape != found[k].shape:
            problems.append(f"{k} has shape {tuple(found[k].shape)}, the config needs {tuple(expected[k].shape)}")
        elif not torch.isfinite(found[k].float()).all():
            problems.append(f"{k} holds NaN or inf")
    if problems:
        raise CheckpointError(f"{where} does not match its config.json: " + "; ".join(problems))
