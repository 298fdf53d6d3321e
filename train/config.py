"""A training run's settings: one dataclass, read from a recipe file and overridden by flags.

    config = load_recipe("synthetic-faces")            # train/recipes/synthetic-faces.json
    config = override(config, {"epochs": 2})           # what a flag or --set does
    save(config, run_dir / CONFIG_NAME)                 # the run folder keeps the resolved settings

A recipe is a JSON object of TrainConfig fields (and an optional "_comment"); fields it leaves
out take the defaults below.
Where the run goes and on what it runs (output folder, device, threads, resuming) are the command
line's, not the recipe's: the same recipe trains the same model on any machine.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .data import ALIGN_CHOICES
from .data.labels import label_list  # noqa: F401  (the commands' one way to read label lists)

RECIPES = Path(__file__).resolve().parent / "recipes"
CONFIG_NAME = "train_config.json"  # in the run folder and in its model folder
DATASETS = ("synthetic", "celeba", "folder")
LIKELIHOODS = ("laplace", "gaussian", "bernoulli")

# the settings a flag overrides (every other one through a recipe file or --set NAME=VALUE)
SETTING_FLAGS = {
    "dataset": dict(choices=["synthetic", "celeba", "folder"], help="which dataset"),
    "root": dict(help="dataset folder (celeba: the folder holding img_align_celeba/; folder: the images)"),
    "labels": dict(dest="labels_csv", help="folder dataset: CSV of labels (file name, then one 0/1/empty column per label)"),
    "label-names": dict(nargs="+", help="train on these labels only, e.g. Smiling,Eyeglasses (commas or spaces); "
                                        "none: the dataset's (CelebA: the paper's 18)"),
    "image-size": dict(type=int, help="image size in pixels (64 or 128)"),
    "sup-frac": dict(type=float, help="fraction f of the labelled training rows that keep their labels "
                                      "(0: unsupervised, 1: every label given)"),
    "limit": dict(type=int, help="use only the first N training images, a number of images (quick runs)"),
    "latent-dim": dict(type=int, help="total latent size (one per label + style)"),
    "likelihood": dict(choices=["laplace", "gaussian", "bernoulli"], help="the family of p(x|z)"),
    "epochs": dict(type=int, help="passes over the unlabelled training images (or the labelled ones when none are)"),
    "batch-size": dict(type=int, help="global batch size in images (split over torchrun ranks)"),
    "lr": dict(type=float, help="Adam's peak learning rate (a cosine decays it to 5%% of this)"),
    "k": dict(type=int, help="samples of q(z_c|x) that estimate q(y|x)"),
    "seed": dict(type=int, help="training seed (initialisation, data order, sampling)"),
    "classification-weight": dict(type=float, help="alpha: adds alpha * log q(y|x) to the labelled loss (0: Eq. 1)"),
    "intervention-weight": dict(type=float, help="gamma of the intervention term (train/aids.py; 0: off)"),
    "intervention-from": dict(type=float, help="fraction of the run (0..1) after which the intervention term applies "
                                               "(0.8: the last fifth)"),
    "fit-style-prior": dict(type=int, help="fit the style latents' sampling prior to N training faces at the end, a "
                                           "number of faces (0: N(0, I))"),
    "eval-limit": dict(type=int, help="evaluate on the first N test images only, a number of images"),
}


def flag_help(flag: str) -> str:
    """A setting flag's help with the default it takes without a recipe."""
    default = getattr(TrainConfig(), flag_dest(flag))
    shown = "none" if default is None else " ".join(map(str, default)) if isinstance(default, list) else default
    return f"{SETTING_FLAGS[flag]['help']} (default: {shown or 'none'})"


def describe_settings() -> str:
    """Every setting of TrainConfig, one per line: NAME = DEFAULT  meaning (what --list-settings prints)."""
    import inspect
    import re

    meaning = {m[1]: m[2] or "" for m in re.finditer(r"^    (\w+): [^=\n]+= [^#\n]+?(?:  # (.*))?$",
                                                     inspect.getsource(TrainConfig), re.M)}
    defaults = to_dict(TrainConfig())
    width = max(map(len, defaults))
    return "\n".join(f"{name:<{width}} = {json.dumps(value):<12} {meaning.get(name, '')}".rstrip()
                     for name, value in defaults.items())


def flag_dest(flag: str) -> str:
    """The setting a flag of SETTING_FLAGS overrides."""
    return SETTING_FLAGS[flag].get("dest", flag.replace("-", "_"))


@dataclass
class TrainConfig:
    """Every setting of a training run. The training aids (classification, intervention and
    emphasis settings) are explained in train/aids.py; 0 turns each off, leaving Eq. 1."""

    # data
    dataset: str = "synthetic"  # synthetic | celeba | folder
    root: str | None = None  # celeba: the folder holding img_align_celeba/; folder: the images
    labels_csv: str | None = None  # folder: CSV of labels (file name, then one 0/1/empty column per label)
    label_names: list[str] | None = None  # train on these labels only (default: the dataset's; CelebA: the paper's 18)
    image_size: int = 64  # pixels, 64 or 128
    sup_frac: float = 1.0  # fraction f of the training rows carrying labels that keep them (0: none, 1: all)
    limit: int | None = None  # use only the first N training images, a number of images (quick runs)
    val_limit: int = 2000  # validation images scored after each epoch, a number of images
    align: str | None = None  # folder: align each photo's face first (synthetic | celeba | celeba-crop framing)
    # model (ccvae.CCVAE's config)
    latent_dim: int = 45  # all latents: characteristic_dim per label, the rest style
    characteristic_dim: int = 1  # d, entries of each label's characteristic latent (1: the paper)
    channels: list[int] | None = None  # encoder conv widths (default: the paper's 32 32 64 128 at 64x64)
    hidden_dim: int = 256  # width of the encoder's last layer
    label_gates: bool = True  # decoder reads a learned soft step per label (README)
    decoder_film: bool = True  # every decoder stage scaled and shifted by z (README)
    likelihood: str = "gaussian"  # laplace | gaussian | bernoulli
    likelihood_scale: float = 0.1  # initial scale of p(x|z); always learned
    # optimisation
    epochs: int = 50  # passes over the unlabelled training images (over the labelled ones when none are)
    batch_size: int = 64  # global batch (split over torchrun ranks)
    lr: float = 1e-3  # Adam's peak rate; a cosine decays it to 5 % of this over the epochs
    k: int = 100  # samples of q(z_c|x) that estimate q(y|x)
    seed: int = 0  # initialisation, data order and sampling
    # training aids (train/aids.py)
    classification_weight: float = 3000.0  # alpha: + alpha * log q(y|x) on labelled batches
    intervention_weight: float = 300.0  # gamma: + gamma * log q(y_i = v | z'_i) for decoded edits
    intervention_from: float = 0.8  # fraction of the run after which gamma applies (0.8: the last fifth)
    intervention_focus: float = 0.0  # share of the edits drawn where they miss (0: uniform)
    intervention_precedence: list[str] = field(default_factory=list)  # labels that win over their exclusive partners
    residual_emphasis: float = 0.0  # P: gradient of each pixel scaled by its error^P (0: off)
    residual_emphasis_floor: float = 0.01  # eps under each pixel's error
    # after training
    fit_style_prior: int = 10000  # fit the style prior and the kind directions on N training faces, a number of faces (0: neither)
    eval_limit: int | None = None  # evaluate on the first N test images, a number of images (default: all)

    def __post_init__(self) -> None:
        check(self)


def fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def check(c: TrainConfig) -> None:
    """A ValueError naming the first setting out of its range."""
    def need(ok: bool, name: str, what: str) -> None:
        if not ok:
            raise ValueError(f"{name} must be {what}, got {getattr(c, name)!r}")
    need(c.dataset in DATASETS, "dataset", f"one of {DATASETS}")
    need(c.likelihood in LIKELIHOODS, "likelihood", f"one of {LIKELIHOODS}")
    need(c.image_size in (64, 128), "image_size", "64 or 128")
    need(0.0 <= c.sup_frac <= 1.0, "sup_frac", "in [0, 1]")
    need(c.limit is None or c.limit >= 1, "limit", "a positive number of images")
    need(c.val_limit >= 0, "val_limit", "a number of images >= 0")
    need(c.align is None or (c.dataset == "folder" and c.align in ALIGN_CHOICES), "align",
         f"None, or for the folder dataset one of {ALIGN_CHOICES}")
    need(c.eval_limit is None or c.eval_limit >= 1, "eval_limit", "a positive number of images")
    need(c.latent_dim >= 1, "latent_dim", "positive")
    need(c.characteristic_dim >= 1, "characteristic_dim", "at least 1")
    need(c.channels is None or (len(c.channels) > 0 and min(c.channels) >= 1), "channels", "positive widths")
    need(c.hidden_dim >= 1, "hidden_dim", "a positive width")
    need(c.likelihood_scale > 0, "likelihood_scale", "positive")
    need(c.epochs >= 1, "epochs", "at least 1")
    need(c.batch_size >= 1, "batch_size", "at least 1")
    need(c.lr > 0 and math.isfinite(c.lr), "lr", "a positive number")
    need(c.k >= 1, "k", "at least 1")
    for name in ("classification_weight", "intervention_weight", "residual_emphasis"):
        need(getattr(c, name) >= 0 and math.isfinite(getattr(c, name)), name, "a finite number >= 0")
    need(0.0 <= c.intervention_from <= 1.0, "intervention_from", "a fraction of the run in [0, 1]")
    need(0.0 <= c.intervention_focus <= 1.0, "intervention_focus", "in [0, 1]")
    need(len(set(c.intervention_precedence)) == len(c.intervention_precedence), "intervention_precedence",
         "a list of distinct labels")
    need(c.residual_emphasis_floor > 0 and math.isfinite(c.residual_emphasis_floor), "residual_emphasis_floor",
         "a finite number > 0")
    need(c.fit_style_prior >= 0, "fit_style_prior", "a number of training faces >= 0")


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path to a JSON file, or the name of one in train/recipes/."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"recipe {str(name_or_path)!r}: no such file")
        return path
    bundled = RECIPES / f"{name_or_path}.json"
    if not bundled.is_file():
        names = sorted(p.stem for p in RECIPES.glob("*.json"))
        raise FileNotFoundError(f"unknown recipe {str(name_or_path)!r}; the bundled recipes are {names}, "
                                "or give the path of a .json file")
    return bundled


REPLACED = {"intervention_start": "intervention_from, a fraction of the run in [0, 1] (40 of 50 epochs: 0.8)"}


def from_dict(values: dict, where: str = "the settings", *, saved_run: bool = False) -> TrainConfig:
    """A TrainConfig from a dict of its fields; an unknown name or a wrong type is a ValueError.
    saved_run: the settings of an existing run (--resume), whose replaced settings are converted
    (intervention_start E of N epochs -> intervention_from E / N) instead of refused."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a JSON object of settings, got {type(values).__name__}")
    if saved_run and "intervention_start" in values:
        values = dict(values)
        start = values.pop("intervention_start")
        values.setdefault("intervention_from", min(max(float(start) / max(values.get("epochs", 50), 1), 0.0), 1.0))
    replaced = sorted(set(values) & set(REPLACED))
    if replaced:
        raise ValueError(f"{where}: {replaced[0]} was replaced by {REPLACED[replaced[0]]}")
    known = fields()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; the settings are {sorted(known)}")
    return TrainConfig(**{name: _typed(name, value, where) for name, value in values.items()})


def load_recipe(name_or_path: str | Path, *, saved_run: bool = False) -> TrainConfig:
    path = recipe_path(name_or_path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"recipe {path} is not valid JSON: {e}") from e
    if isinstance(values, dict):
        values.pop("_comment", None)  # a recipe may say in words why it is what it is
    return from_dict(values, f"recipe {path}", saved_run=saved_run)


def override(config: TrainConfig, changes: dict) -> TrainConfig:
    """config with the given settings replaced (checked as a recipe's are)."""
    return from_dict({**to_dict(config), **changes}, "the overrides")


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def save(config: TrainConfig, path: Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def parse_setting(text: str) -> tuple[str, object]:
    """`NAME=VALUE` (what --set takes) -> (name, value): VALUE as JSON (numbers, true, null, lists),
    else as a string."""
    name, sep, raw = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise ValueError(f"--set takes NAME=VALUE, got {text!r}")
    if name in REPLACED:
        raise ValueError(f"--set {text!r}: {name} was replaced by {REPLACED[name]}")
    if name not in fields():
        raise ValueError(f"--set {text!r}: unknown setting {name!r}; the settings are {sorted(fields())} "
                         "(python -m train --list-settings describes each)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, value


def _typed(name: str, value, where: str):
    """value checked against the field's type (an int is accepted where a float is expected)."""
    kind = fields()[name].type
    ok = {
        "str": lambda v: isinstance(v, str),
        "str | None": lambda v: v is None or isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "list[str] | None": lambda v: v is None or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "list[int] | None": lambda v: v is None or (isinstance(v, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in v)),
    }[kind]
    if not ok(value):
        raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")
    return float(value) if kind == "float" else value
