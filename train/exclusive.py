"""What exclusive labels do to the plain intervention metric: `python -m train.exclusive [CHECKPOINT]`.

Labels that the test data never shows present together (the hair colours) make some
interventions contradictory: adding Black_Hair to a brown-haired face and Brown_Hair to a
black-haired one both put the two latents at "present". A decoder that does not know which colour
the face had (a disentangled z_s must not tell it) can draw only one of the two, so

1. the bound: over the oracle-judged faces, the best plain intervention success of the labels in
   an exclusive group if every compatible edit succeeded: per fixed order of precedence between
   the labels, and for any decoder that draws one of two exclusive labels (the group's mean, and
   the score that at least one label cannot exceed);
2. the measurement: both latents of each exclusive pair set to their y = 1 means on test faces;
   what the oracle reads.

`--write-config` instead stores the pairs the model should keep exclusive (`exclusive_labels`,
see `evaluate.exclusive_pairs`), found in the labels it was trained on, in the config.json of a
checkpoint saved before training did that itself; the weights are left as they are.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from ccvae import CCVAE, editing

from . import batches
from .evaluate import BUNDLED_MODEL, DEFAULT_ORACLE, exclusive_pairs, never_together


def exclusive_groups(exclusive: np.ndarray) -> list[list[int]]:
    """Groups of pairwise exclusive labels, greedily: each label not yet grouped starts a group that
    takes every later label exclusive with all its members. exclusive: (L, L) bool."""
    groups, used = [], set()
    for i in range(len(exclusive)):
        if i in used:
            continue
        group = [i]
        for j in range(i + 1, len(exclusive)):
            if j not in used and all(exclusive[j, k] for k in group):
                group.append(j)
        if len(group) >= 2:
            groups.append(group)
            used.update(group)
    return groups


def precedence_bounds(y: np.ndarray, group: list[int]):
    """For each order of precedence between the labels of `group` (the first drawn when two are
    present), the best plain intervention success of each label (in `group`'s order) if every
    compatible edit succeeds: adding label i fails on the faces of the labels that precede it.
    y: (N, L) labels in {0, 1}. Yields (order, rates)."""
    for order in itertools.permutations(group):
        yield order, [1 - sum(y[:, j].sum() for j in order[:order.index(i)]) / (2 * len(y)) for i in group]


def contradiction_bound(y: np.ndarray, group: list[int]) -> tuple[int, float, float]:
    """For any decoder that draws one of two exclusive labels: the fewest failed requests among
    the group's 2 * len(group) * N interventions, the best mean success over the group, and the
    score that at least one of its labels cannot exceed. A latent pair {i, j} drawn as i serves the
    n_j requests "add i to a face with j" and fails the n_i requests "add j to a face with i"
    (mixing the two fails more), so at least min(n_i, n_j) fail per pair."""
    n = len(y)
    fails = int(sum(min(y[:, i].sum(), y[:, j].sum()) for i, j in itertools.combinations(group, 2)))
    return fails, 1 - fails / (2 * len(group) * n), 1 - fails / len(group) / (2 * n)


def write_config(checkpoint: Path, train_labels: np.ndarray) -> list[list[str]]:
    """Set the checkpoint's exclusive_labels from the labels it was trained on (N, L in the
    model's label order) and rewrite its config.json; the weights file is rewritten unchanged."""
    from ccvae import hub

    model = CCVAE.from_pretrained(checkpoint)
    pairs = exclusive_pairs(train_labels, model.label_names)
    updated = CCVAE(**{**model.config, "exclusive_labels": pairs})
    updated.load_state_dict(model.state_dict(), strict=True)
    hub.save(updated, Path(checkpoint))
    return pairs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", nargs="?", default=str(BUNDLED_MODEL))
    p.add_argument("--n", type=int, default=500, help="test faces (the evaluation's oracle judges the first 500)")
    w = p.add_argument_group("--write-config: the labels the checkpoint was trained on (as `python -m train` took them)")
    w.add_argument("--write-config", action="store_true",
                   help="store the exclusive pairs of its training labels in the checkpoint's config.json")
    w.add_argument("--dataset", default="synthetic")
    w.add_argument("--root", default=None)
    w.add_argument("--labels-csv", default=None)
    w.add_argument("--sup-frac", type=float, default=1.0)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--data-seed", type=int, default=0)
    args = p.parse_args(argv)
    from .data import load_dataset
    from .oracle import load_oracle

    if args.write_config:
        from .data import semi_supervised

        saved = CCVAE.from_pretrained(args.checkpoint)
        train = load_dataset(args.dataset, "train", root=args.root, labels_csv=args.labels_csv,
                             label_names=saved.label_names, image_size=saved.image_size, seed=args.data_seed)
        labelled, _ = semi_supervised(train, args.sup_frac, seed=args.seed)
        pairs = write_config(Path(args.checkpoint), np.asarray(labelled.labels))
        print(f"{args.checkpoint}/config.json: exclusive_labels = {pairs} "
              f"(from {len(labelled)} labelled {args.dataset} training images)")
        return
    model = CCVAE.from_pretrained(args.checkpoint).eval()
    oracle = load_oracle(DEFAULT_ORACLE).eval()
    test = load_dataset("synthetic", "test", label_names=model.label_names, image_size=model.image_size, seed=0)
    exclusive = never_together(np.asarray(test.labels))  # never together in the whole test split
    y = np.asarray(test.labels)[:args.n]
    names = model.label_names
    x = batches.to_float(batches.load(test.images[:args.n]))
    loc, _ = model.prior_params()
    with torch.no_grad():
        z = editing.encode(model, x)
    for group in exclusive_groups(exclusive):
        counts = {names[i]: int(y[:, i].sum()) for i in group}
        print(f"exclusive group {list(counts)}: faces with each {list(counts.values())} of {len(y)}")
        for order, rates in precedence_bounds(y, group):
            print(f"  precedence {' > '.join(names[i] for i in order)}: best plain success "
                  + ", ".join(f"{names[i]} {r:.3f}" for i, r in zip(group, rates)))
        fails, mean, worst = contradiction_bound(y, group)
        print(f"  any decoder that draws one of two: at least {fails} of the group's {2 * len(group) * len(y)} "
              f"requests fail, so the group's mean is at most {mean:.3f} and some label scores at most {worst:.3f}")
        oi = [oracle.label_names.index(names[i]) for i in group]
        for a, b in itertools.combinations(group, 2):
            zz = z.clone()
            zz[:, a], zz[:, b] = loc[1, a], loc[1, b]
            with torch.no_grad():
                read = oracle.predict(editing.decode(model, zz))[:, oi].float().mean(0).tolist()
            print(f"  {names[a]} + {names[b]} both at y = 1: oracle reads "
                  + ", ".join(f"{names[i]} {r:.2f}" for i, r in zip(group, read)))


if __name__ == "__main__":
    main()
