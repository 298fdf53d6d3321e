"""The factor reader: a small CNN that reads the synthetic generator's ground-truth factors from an image.

The label oracle (`train.oracle`) says *whether* a face wears glasses; this network says *which*
glasses (frame shape, size, thickness, hue, ...), and reads every other factor of
`train.data.synthetic.FACTOR_NAMES` (pose, background, skin tone, ...), so that evaluation can
measure how much a resample of z_i changes a characteristic, and how much else it changes
(`train.factors`). It is a separate network with its own folder, so the label oracle, and the
published metrics measured with it, stay as they are.

Heads, one per factor, by kind (`factor_specs`):
- amounts ("linear"): one regression output on the standardised factor, (f - loc) / scale, with
  loc and scale the training set's mean and std (buffers saved with the weights);
- hues and angles ("circular", period P: 1 for hues, 2 pi for angles): two outputs regressed on
  (cos 2 pi f / P, sin 2 pi f / P), read back as the angle of that vector;
- kinds ("categorical", C classes: hat style, earring style, hair class): C logits, cross-entropy.
Each factor's loss counts only the faces that show it (`shown_mask`: glasses factors on faces
with glasses, ...); the others carry no information about it. The factor losses are averaged.
Training uses the label oracle's augmentation (`train.oracle.degrade`: blur and noise), so
decoded VAE images, which are slightly blurred, are read fairly.

    python -m train.factor_reader --n-train 32000 --epochs 10 --threads 1 --out checkpoints/factor-oracle-synthetic

    from train.factor_reader import load_factor_reader
    reader = load_factor_reader("checkpoints/factor-oracle-synthetic")
    reader.read(x)      # x (B, 3, H, W) float in [0, 1] -> (B, F) factor values in FACTOR_NAMES units
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .oracle import degrade, fit, load_network, save_network, to_tensor

FORMAT = "ccvae-factor-reader"
DEFAULT_READER = Path(__file__).resolve().parents[1] / "checkpoints" / "factor-oracle-synthetic"
KINDS = ("linear", "circular", "categorical")
# A factor is readable when the reader explains at least this share of its variation on held-out,
# blurred faces (`quality`: R^2, its circular analogue, or Cohen's kappa); metrics skip the others.
READABLE = 0.7


def factor_specs() -> list[dict]:
    """The synthetic faces' factors as reader heads: [{"name", "kind", "period" | "classes"}], FACTOR_NAMES order.

    Circular: the hues of CIRCULAR_FACTORS (period 1) and the two angles drawn over the whole
    turn, bg_gradient_angle and light_angle (period 2 pi). Categorical: CATEGORICAL_FACTORS, with
    as many classes as the generator draws (hat and earring style 3, hair class 5).
    """
    from .data.synthetic import CATEGORICAL_FACTORS, CIRCULAR_FACTORS, FACTOR_NAMES

    classes = {"hat_style": 3, "earring_style": 3, "hair_class": 5}
    periods = {**{k: 1.0 for k in CIRCULAR_FACTORS}, "bg_gradient_angle": 2 * math.pi, "light_angle": 2 * math.pi}
    if set(CATEGORICAL_FACTORS) != set(classes):
        raise ValueError(f"the generator's categorical factors {CATEGORICAL_FACTORS} changed; "
                         f"this table knows the classes of {sorted(classes)}")
    specs = []
    for name in FACTOR_NAMES:
        if name in classes:
            specs.append({"name": name, "kind": "categorical", "classes": classes[name]})
        elif name in periods:
            specs.append({"name": name, "kind": "circular", "period": periods[name]})
        else:
            specs.append({"name": name, "kind": "linear"})
    return specs


def shown_mask(labels: np.ndarray, label_names: Sequence[str], factor_names: Sequence[str]) -> np.ndarray:
    """(N, F) bool: whether each face shows each factor (FACTOR_SHOWN_WHEN; factors not listed there
    show on every face). A factor whose deciding label is not among `label_names`, or is unknown
    (-1), counts as not shown. labels: (N, L) in `label_names` order."""
    from .data.synthetic import FACTOR_SHOWN_WHEN

    labels = np.asarray(labels)
    out = np.ones((len(labels), len(factor_names)), dtype=bool)
    for j, name in enumerate(factor_names):
        if name in FACTOR_SHOWN_WHEN:
            label, value = FACTOR_SHOWN_WHEN[name]
            out[:, j] = (labels[:, list(label_names).index(label)] == value) if label in label_names else False
    return out


class FactorReader(nn.Module):
    """x (B, 3, S, S) in [0, 1] -> raw head outputs (B, O); `read` turns them into factor values (B, F).

    The label oracle's trunk (four stride-2 conv blocks, S -> S/16, and a hidden layer), with one
    head per factor as described in the module docstring. Keyword-only; the config travels in
    config.json.
    """

    def __init__(self, *, factors: Sequence[Mapping], image_size: int = 64, channels: Sequence[int] = (32, 64, 128, 128),
                 hidden_dim: int = 256):
        super().__init__()
        if not factors:
            raise ValueError("factors must name at least one factor")
        specs, width = [], 0
        for spec in factors:
            spec = dict(spec)
            kind = spec.get("kind")
            if kind not in KINDS:
                raise ValueError(f"factor {spec.get('name')!r} has kind {kind!r}; expected one of {KINDS}")
            allowed = {"name", "kind"} | ({"period"} if kind == "circular" else {"classes"} if kind == "categorical" else set())
            if set(spec) != allowed:
                raise ValueError(f"factor {spec.get('name')!r} of kind {kind!r} needs exactly the keys {sorted(allowed)}, "
                                 f"got {sorted(spec)}")
            if kind == "circular" and not float(spec["period"]) > 0:
                raise ValueError(f"circular factor {spec['name']!r} needs a positive period, got {spec['period']}")
            if kind == "categorical" and int(spec["classes"]) < 2:
                raise ValueError(f"categorical factor {spec['name']!r} needs at least 2 classes, got {spec['classes']}")
            specs.append(spec)
            width += 1 if kind == "linear" else 2 if kind == "circular" else int(spec["classes"])
        names = [s["name"] for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"factor names repeat: {names}")
        if image_size % 2 ** len(channels) or image_size < 2 ** len(channels):
            raise ValueError(f"image_size {image_size} must be a multiple of 2^{len(channels)} = {2 ** len(channels)}")
        self.config = {"factors": specs, "image_size": int(image_size), "channels": [int(c) for c in channels],
                       "hidden_dim": int(hidden_dim)}
        layers, c_in = [], 3
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(channels)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, hidden_dim), nn.ReLU(inplace=True),
                                  nn.Linear(hidden_dim, width))
        # standardisation of the linear factors' targets, set from the training data (set_target_stats)
        self.register_buffer("target_loc", torch.zeros(len(specs)))
        self.register_buffer("target_scale", torch.ones(len(specs)))

    @property
    def factor_names(self) -> list[str]:
        return [s["name"] for s in self.config["factors"]]

    @property
    def specs(self) -> list[dict]:
        return [dict(s) for s in self.config["factors"]]

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    def slices(self) -> list[slice]:
        """Where each factor's head sits among the outputs."""
        out, a = [], 0
        for s in self.config["factors"]:
            w = 1 if s["kind"] == "linear" else 2 if s["kind"] == "circular" else int(s["classes"])
            out.append(slice(a, a + w))
            a += w
        return out

    def set_target_stats(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.target_loc.copy_(torch.as_tensor(loc, dtype=torch.float32))
        self.target_scale.copy_(torch.as_tensor(scale, dtype=torch.float32).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"the factor reader takes (B, 3, {self.image_size}, {self.image_size}) images, got {tuple(x.shape)}")
        return self.head(self.features(x * 2 - 1))                       # (B, O)

    def decode_outputs(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs (B, O) -> factor values (B, F): amounts in their units, hues/angles in [0, period),
        kinds as the class index (a float)."""
        values = []
        for j, (s, sl) in enumerate(zip(self.config["factors"], self.slices())):
            o = out[:, sl]
            if s["kind"] == "linear":
                values.append(o[:, 0] * self.target_scale[j] + self.target_loc[j])
            elif s["kind"] == "circular":
                values.append(torch.atan2(o[:, 1], o[:, 0]).remainder(2 * math.pi) * (s["period"] / (2 * math.pi)))
            else:
                values.append(o.argmax(1).float())
        return torch.stack(values, 1)

    @torch.no_grad()
    def read(self, x: torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
        """(B, F) factor values of images x (B, 3, S, S) in [0, 1], in eval mode (the previous mode restored)."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return torch.cat([self.decode_outputs(self(x[a:a + batch_size].to(device, torch.float32)))
                              for a in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0, len(self.factor_names))
        finally:
            self.train(was_training)

    def loss(self, x: torch.Tensor, factors: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """Mean over factors of each head's loss over the faces that show the factor.
        factors (B, F) in FACTOR_NAMES units, shown (B, F) bool."""
        out = self(x)
        terms = []
        for j, (s, sl) in enumerate(zip(self.config["factors"], self.slices())):
            m = shown[:, j]
            if not m.any():
                continue
            o, t = out[m, sl], factors[m, j]
            if s["kind"] == "linear":
                terms.append(F.mse_loss(o[:, 0], (t - self.target_loc[j]) / self.target_scale[j]))
            elif s["kind"] == "circular":
                a = t * (2 * math.pi / s["period"])
                terms.append(F.mse_loss(o, torch.stack([a.cos(), a.sin()], 1)) * 2)   # squared chord length
            else:
                terms.append(F.cross_entropy(o, t.round().long().clamp(0, int(s["classes"]) - 1)))
        return torch.stack(terms).mean()

    def save(self, directory: Path) -> None:
        save_network(self, directory, fmt=FORMAT)


def load_factor_reader(path, *, map_location="cpu") -> FactorReader:
    """Rebuild a FactorReader from config.json and load model.safetensors strictly (no pickles).
    A missing, damaged or mismatched file raises CheckpointError naming it."""
    return load_network(FactorReader, path, fmt=FORMAT, what="a factor reader", map_location=map_location)


# ---------------------------------------------------------------------------------------------
# How well it reads.

def quality(spec: Mapping, read: np.ndarray, true: np.ndarray) -> float:
    """The share of a factor's variation the reader explains, 1 = perfect, 0 = no better than a constant
    (or chance), over the given faces (read, true: (N,)); NaN for fewer than two faces.

    linear: R^2 = 1 - sum (read - true)^2 / sum (true - mean true)^2.
    circular: the same on the unit vectors u(f) = (cos, sin)(2 pi f / period):
        1 - sum |u(read) - u(true)|^2 / sum |u(true) - mean u(true)|^2.
    categorical: Cohen's kappa, (accuracy - p_e) / (1 - p_e), p_e = sum_k P(true = k) P(read = k).
    """
    read, true = np.asarray(read, np.float64), np.asarray(true, np.float64)
    if len(true) < 2:
        return float("nan")
    if spec["kind"] == "categorical":
        r, t = read.round().astype(int), true.round().astype(int)
        k = int(spec["classes"])
        p_e = float(sum(np.mean(t == c) * np.mean(r == c) for c in range(k)))
        return float((np.mean(r == t) - p_e) / (1 - p_e)) if p_e < 1 else float("nan")
    if spec["kind"] == "circular":
        w = 2 * math.pi / spec["period"]
        ur, ut = np.stack([np.cos(w * read), np.sin(w * read)], 1), np.stack([np.cos(w * true), np.sin(w * true)], 1)
        sst = ((ut - ut.mean(0)) ** 2).sum()
        return float(1 - ((ur - ut) ** 2).sum() / sst) if sst > 0 else float("nan")
    sst = ((true - true.mean()) ** 2).sum()
    return float(1 - ((read - true) ** 2).sum() / sst) if sst > 0 else float("nan")


def quality_table(reader: FactorReader, images: np.ndarray, labels: np.ndarray, label_names: Sequence[str],
                  factors: Mapping[str, np.ndarray], *, blur: bool = False, seed: int = 1) -> dict[str, float]:
    """Per factor, `quality` over the faces that show it. images (N, S, S, 3) uint8; labels (N, L);
    factors: name -> (N,) true values. blur=True reads copies degraded as in training (seeded)."""
    x = to_tensor(images)
    if blur:
        x = degrade(x, torch.Generator().manual_seed(seed))
    read = reader.read(x).numpy()
    shown = shown_mask(labels, label_names, reader.factor_names)
    if any(len(factors[k]) != len(read) for k in reader.factor_names):
        raise ValueError(f"factors must give one value per image ({len(read)})")
    return {s["name"]: quality(s, read[shown[:, j], j], np.asarray(factors[s["name"]])[shown[:, j]])
            for j, s in enumerate(reader.specs)}


# ---------------------------------------------------------------------------------------------
# Training.

# Characteristics whose factors the generator draws on every face and uses only when the label is
# on (FACTOR_SHOWN_WHEN), with the labels that must be off for them to show (a hat or bangs never go
# with Bald). Switching one on gives a face the generator also draws, only more often.
BOOSTED = {"Eyeglasses": (), "Wearing_Earrings": (), "Wearing_Necktie": (), "Wearing_Hat": ("Bald",),
           "Bangs": ("Bald",)}


def training_faces(seed: int, n: int, *, size: int = 64, boost: float = 0.5):
    """The first n faces of the train split, each characteristic of BOOSTED switched on with
    probability `boost` (where it is off and allowed), and beards likewise (No_Beard off), so the
    reader sees every characteristic's factors often: glasses show on 9% of the generator's faces.
    boost = 0: the split as it is. Returns images (n, S, S, 3) uint8, labels (n, L) int8 in
    LABEL_NAMES order, factors (n, F) float32 in FACTOR_NAMES order."""
    from .data.synthetic import factor_vector, label_vector, render_face, sample_factors

    if not 0 <= boost <= 1:
        raise ValueError(f"boost must be a probability in [0, 1], got {boost}")
    rng = np.random.default_rng([seed, 7])
    images = np.empty((n, size, size, 3), np.uint8)
    labels, factors = [], []
    for i in range(n):
        f = sample_factors(seed, "train", i)
        for label, blockers in BOOSTED.items():
            if rng.random() < boost and not any(f[b] for b in blockers):
                f[label] = True
        if rng.random() < boost:
            f["No_Beard"] = False
        images[i] = render_face(f, size)
        labels.append(label_vector(f))
        factors.append(factor_vector(f))
    return images, np.stack(labels), np.stack(factors)

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.factor_reader", description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=int, default=32_000, help="training faces (the first N of the train split)")
    p.add_argument("--boost", type=float, default=0.5,
                   help="probability of switching each accessory (glasses, earrings, tie, hat, bangs, beard) on "
                        "in a training face (training_faces); 0: the generator's own frequencies")
    p.add_argument("--n-test", type=int, default=5_000, help="held-out faces (the first N of the test split)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="dataset seed (faces) and training seed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--out", type=Path, default=DEFAULT_READER)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # for the card's command line
    return args


def main(args: argparse.Namespace) -> dict:
    from .data import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from .data.synthetic import FACTOR_NAMES, LABEL_NAMES

    test = load_dataset("synthetic", "test", image_size=args.image_size, seed=args.seed, limit=args.n_test,
                        cache_dir=args.cache_dir)
    reader = FactorReader(factors=factor_specs(), image_size=args.image_size)
    names = reader.factor_names
    if names != FACTOR_NAMES:
        raise ValueError(f"factor_specs() names {names}, not the generator's FACTOR_NAMES {FACTOR_NAMES}")
    images, labels, factors = training_faces(args.seed, args.n_train, size=args.image_size, boost=args.boost)
    factors = torch.from_numpy(factors)                                                  # (N, F)
    shown = torch.from_numpy(shown_mask(labels, LABEL_NAMES, names))                     # (N, F)
    masked = torch.where(shown, factors, torch.nan)
    reader.set_target_stats(masked.nanmean(0).nan_to_num(0.0),
                            (masked - masked.nanmean(0)).square().nanmean(0).sqrt().nan_to_num(1.0))

    def loss(x: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return reader.loss(x, factors[idx], shown[idx])

    def report(epoch: int, mean_loss: float, seconds: float) -> None:
        q = quality_table(reader, test.images[:1000], test.labels[:1000], test.label_names,
                          {k: v[:1000] for k, v in test.factors.items()}, blur=True)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {mean_loss:.4f}  held-out quality (blurred, 1000 faces) "
              f"median {np.nanmedian(list(q.values())):.3f}  {seconds:.0f}s", flush=True)
    seconds = fit(reader, images, loss, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                  report=report)
    clean = quality_table(reader, test.images, test.labels, test.label_names, test.factors)
    blurred = quality_table(reader, test.images, test.labels, test.label_names, test.factors, blur=True)
    reader.save(args.out)
    command = "python -m train.factor_reader " + " ".join(shlex.quote(a) for a in args.argv)
    write_card(args.out, reader, clean, blurred, command=command, seconds=seconds, n_train=len(images),
               n_test=len(test), threads=torch.get_num_threads(), boost=args.boost)
    unreadable = [k for k in names if not blurred[k] >= READABLE]
    print(f"saved {args.out}; unreadable (blurred quality < {READABLE}): {unreadable}")
    return {"quality": clean, "quality_blurred": blurred, "seconds": seconds}


def write_card(directory: Path, reader: FactorReader, clean: dict, blurred: dict, *, command: str, seconds: float,
               n_train: int, n_test: int, threads: int, boost: float) -> None:
    from .data.synthetic import FACTOR_SHOWN_WHEN

    def shown_on(name):
        if name not in FACTOR_SHOWN_WHEN:
            return "all"
        label, value = FACTOR_SHOWN_WHEN[name]
        return f"{label} = {value}"

    def kind(s):
        return {"linear": "amount (R^2)", "circular": f"circular, period {s.get('period', 0):.4g} (circular R^2)",
                "categorical": f"{s.get('classes')} kinds (kappa)"}[s["kind"]]

    rows = "\n".join(f"| {s['name']} | {kind(s)} | {shown_on(s['name'])} | {clean[s['name']]:.3f} | "
                     f"{blurred[s['name']]:.3f} | {'yes' if blurred[s['name']] >= READABLE else '**no**'} |"
                     for s in reader.specs)
    unreadable = [k for k in reader.factor_names if not blurred[k] >= READABLE]
    text = f"""---
tags: [ccvae, oracle, synthetic-faces]
---
# Factor reader for synthetic faces

A small CNN ({sum(p.numel() for p in reader.parameters()):,} parameters) that reads the
{len(reader.factor_names)} ground-truth factors of `train.data.synthetic` faces
({reader.image_size}x{reader.image_size}): amounts by regression, hues and angles as (cos, sin),
kinds (hat style, earring style, hair class) by classification, each trained only on the faces
that show it. It was trained on the generator's true factors (first {n_train:,} faces of the
train split, seed 0, with glasses, earrings, a tie, a hat, bangs and a beard each switched on in
a share {boost:g} of them, so every characteristic is seen often) with the label oracle's blur and
noise augmentation, and is used by
`train.factors` to measure what a resample of a characteristic latent changes
(`characteristic_coverage`, `style_kept`).

Trained in {seconds / 60:.1f} min on the CPU ({threads} thread{'s' if threads != 1 else ''}) with:

    {command}

Held-out quality on the first {n_test:,} faces of the test split, over the faces that show each
factor (clean, and degraded with the training augmentation): R^2 for amounts, its analogue on
the unit circle for hues and angles, Cohen's kappa for kinds; 1 = perfect, 0 = a constant guess.
A factor is used by the metrics when its blurred quality is at least {READABLE}
(`train.factor_reader.READABLE`; evaluation re-checks it on the faces each figure is taken over).
Not readable: {', '.join(unreadable) if unreadable else 'none'}.

| factor | kind (quality) | shown on | quality | quality (blurred + noise) | readable |
|---|---|---|---|---|---|
{rows}

    from train.factor_reader import load_factor_reader
    reader = load_factor_reader("checkpoints/factor-oracle-synthetic")
    reader.read(x)   # x: (B, 3, {reader.image_size}, {reader.image_size}) float in [0, 1] -> (B, {len(reader.factor_names)}) factor values
"""
    (Path(directory) / "README.md").write_text(text)


if __name__ == "__main__":
    main(parse_args())
