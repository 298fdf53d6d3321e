"""Training state on disk without pickles: safetensors for tensors, JSON for the rest.

A state folder holds the model (Hub layout: config.json + model.safetensors), the optimiser's
tensors and the random generator (training_state.safetensors) and the counters, arguments and
optimiser hyperparameters (training_state.json). Folders are replaced atomically: written
beside the target, then renamed over it, so a crash never leaves a half-written state.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ccvae import CCVAE
from ccvae import hub

TENSORS = "training_state.safetensors"
META = "training_state.json"


def replace_dir(target: Path, write) -> None:
    """Call write(tmp_dir) and move tmp_dir to target atomically (the old target is removed last)."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def save_state(directory: Path, *, model: CCVAE, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               counters: dict, args: dict) -> None:
    def write(tmp: Path) -> None:
        hub.save(model, tmp)
        tensors, scalars = {}, {}
        for idx, per_param in optimizer.state_dict()["state"].items():
            for name, value in per_param.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{name}"] = value
        tensors["generator"] = generator.get_state().cpu()
        save_file(tensors, str(tmp / TENSORS))
        groups = [{k: v for k, v in g.items()} for g in optimizer.state_dict()["param_groups"]]
        meta = {"counters": counters, "args": args, "optimizer_param_groups": groups, "optimizer_scalars": scalars,
                "generator_device": str(generator.device)}
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str))

    replace_dir(directory, write)


def load_state(directory: Path, *, model: CCVAE, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict:
    """Restore model, optimiser and generator in place; returns the saved {"counters", "args"}."""
    directory = Path(directory)
    if not (directory / META).is_file():
        raise FileNotFoundError(f"no training state to resume in {directory} (expected {META})")
    saved = CCVAE.from_pretrained(directory)
    # exclusive_labels come from the labelled data, found again at every start (a state saved
    # before they were kept has none): the architecture and the labels must match
    different = {k for k in saved.config.keys() | model.config.keys()
                 if k != "exclusive_labels" and saved.config.get(k) != model.config.get(k)}
    if different:
        raise ValueError(f"the model in {directory} was built with a different config ({', '.join(sorted(different))}): "
                         f"{saved.config} vs {model.config}")
    model.load_state_dict(saved.state_dict())
    meta = json.loads((directory / META).read_text())
    tensors = load_file(str(directory / TENSORS))
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    # Saved contiguous; give each moment its parameter's memory layout (channels_last convolutions):
    # the fused Adam kernel walks a parameter and its moments in memory order.
    for group in optimizer.param_groups:
        for p in group["params"]:
            per_param = optimizer.state.get(p, {})
            for name, value in per_param.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    per_param[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)
    generator.set_state(tensors["generator"])
    return {"counters": meta["counters"], "args": meta["args"]}
