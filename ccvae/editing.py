"""Latent operations as pure tensor functions: the one code path for training figures and the app.

Conventions: z is (B, D) on the model's device; z[:, :L] are the characteristic latents
(z[:, i] belongs to label i) and z[:, L:] the style latents. Images are (B, C, H, W) floats in
[0, 1]. Labels are given by index or by name. No function modifies its inputs; randomness comes
from an optional torch.Generator (on the model's device), so results can be reproduced.
"""
from __future__ import annotations

import torch

DEFAULT_MARGIN = 1.5  # traversal ranges reach this many prior standard deviations past each mean


@torch.no_grad()
def encode(model, x: torch.Tensor, *, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """z (B, D) for images x: the posterior mean, or a sample of q(z|x) when sample=True."""
    q = model.encode(x.to(model.device, torch.float32))
    return q.sample(generator=generator) if sample else q.mode()


@torch.no_grad()
def decode(model, z: torch.Tensor) -> torch.Tensor:
    """The image mean of p(x|z): (B, C, H, W) in [0, 1]. z may have extra leading dims (..., D)."""
    lead = z.shape[:-1]
    x = model.decode(z.reshape(-1, z.shape[-1]).to(model.device, torch.float32))
    return x.reshape(*lead, *x.shape[1:])


@torch.no_grad()
def reconstruct(model, x: torch.Tensor) -> torch.Tensor:
    """decode(encode(x)) with the posterior mean."""
    return decode(model, encode(model, x))


@torch.no_grad()
def label_probs(model, z: torch.Tensor) -> torch.Tensor:
    """q(y_i = 1 | z_i) for each label: (..., L)."""
    return torch.sigmoid(model.classifier_logits(z[..., : model.num_labels]))


@torch.no_grad()
def traversal_range(model, label: int | str, *, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """(absent_end, present_end) of label i's latent.

    From the y_i = 0 side of p(z_i|y_i=0) (its mean minus margin standard deviations, away from
    the y_i = 1 mean) to the y_i = 1 side of p(z_i|y_i=1) (its mean plus margin standard
    deviations). absent_end > present_end when the y_i = 1 mean is the smaller one.
    """
    i = model.label_index(label)
    loc, scale = model.prior_params()
    mu0, mu1, s0, s1 = loc[0, i].item(), loc[1, i].item(), scale[0, i].item(), scale[1, i].item()
    sign = 1.0 if mu1 >= mu0 else -1.0
    return mu0 - sign * margin * s0, mu1 + sign * margin * s1


def set_latent(z: torch.Tensor, index: int, value: float | torch.Tensor) -> torch.Tensor:
    """A copy of z with z[..., index] = value (a float or a tensor broadcastable to z[..., index])."""
    out = z.clone()
    out[..., index] = torch.as_tensor(value, dtype=z.dtype, device=z.device)
    return out


@torch.no_grad()
def intervene(model, z: torch.Tensor, label: int | str, value: float | torch.Tensor) -> torch.Tensor:
    """do(y_i) through z_i: a copy of z (B, D) with z_i = value, and, where that value reads
    present (q(y_i = 1 | z_i) >= 0.5), every label j the model keeps exclusive with i
    (`model.exclusive`, e.g. the other hair colours) that reads present set to the mean of
    p(z_j | y_j = 0). Two exclusive latents at "present" describe a face the data never shows
    (black and brown hair), which the decoder can draw only one way; clearing the other one
    makes the edit ask for a face it can draw. Without exclusive labels this is `set_latent`.
    """
    i = model.label_index(label)
    return clear_exclusive(model, set_latent(z, i, value), [i])


@torch.no_grad()
def clear_exclusive(model, z: torch.Tensor, labels) -> torch.Tensor:
    """z (..., D) whose latents of `labels` were just set (a walk, a grid, draws), made into
    edits as `intervene` makes them: for each listed label that reads present, the labels the
    model keeps exclusive with it that read present are set to the mean of p(z_j | y_j = 0),
    except the other listed labels (a grid over two hair colours keeps both of its axes).
    Always a copy, equal to z where nothing is cleared (labels without exclusive partners)."""
    idx = [model.label_index(label) for label in labels]
    exclusive = model.exclusive  # a copy of the model's
    exclusive[:, idx] = False  # the listed labels are never cleared
    if not exclusive[idx].any():
        return z.clone()
    L = model.num_labels
    out = z.clone()
    present = label_probs(model, out) >= 0.5  # (..., L)
    partners = exclusive[idx].to(present.device)  # (len(idx), L)
    clear = (present[..., idx, None] & partners).any(-2) & present  # (..., L)
    absent_loc = model.prior_params()[0][0].to(out.dtype)  # (L,): means of p(z_j | y_j = 0)
    out[..., :L] = torch.where(clear, absent_loc, out[..., :L])
    return out


@torch.no_grad()
def sample_characteristic(model, label: int | str, present: bool | torch.Tensor, n: int,
                          *, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of z_i ~ p(z_i | y_i = present): (n,)."""
    i = model.label_index(label)
    loc, scale = model.prior_params()
    v = torch.as_tensor(present, device=model.device).long().expand(n)
    eps = torch.randn(n, generator=generator, device=model.device)
    return loc[v, i] + scale[v, i] * eps


def resample_latent(model, z: torch.Tensor, label: int | str, *, present: bool,
                    generator: torch.Generator | None = None, as_edits: bool = False) -> torch.Tensor:
    """A new variant of label i's characteristic: z_i ~ p(z_i | y_i = present); all else kept. z: (B, D).
    as_edits=True sets each draw as `intervene` does (`clear_exclusive`: a new black hair clears brown)."""
    i = model.label_index(label)
    out = set_latent(z, i, sample_characteristic(model, i, present, z.shape[0], generator=generator).to(z.dtype))
    return clear_exclusive(model, out, [i]) if as_edits else out


def resample_style(model, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """New style latents from the sampling prior (N(0, I), or the fitted one: CCVAE.sample_style);
    every characteristic latent kept. z: (B, D)."""
    out = z.clone()
    out[:, model.num_labels:] = model.sample_style(z.shape[0], generator=generator).to(out)
    return out


@torch.no_grad()
def sample_labels(model, n: int, *, generator: torch.Generator | None = None,
                  compatible: bool = False) -> torch.Tensor:
    """y ~ p(y) = prod_i Bernoulli(y_i; pi_i), the paper's factorised prior: (n, L) floats in {0, 1}.

    compatible=True never sets two labels the model keeps exclusive (``model.exclusive``: one hair
    colour at most, no Bald with bangs or a hat), and keeps each label's frequency pi_i: the
    labels are drawn one after another, those with the most exclusive partners first; a label
    whose partner is already present is absent, otherwise present with probability
    pi_i / (1 - sum of its earlier partners' pi_j). That keeps P(y_i = 1) = pi_i exactly when a
    label's earlier partners are exclusive with each other (the hair colours; Bald, then bangs
    and a hat) and sum_j pi_j stays at most 1, as it does for labels that never occur together;
    otherwise pi_i is approximated. The factorised prior asks for such a clash in ~15 % of its
    draws on the synthetic faces: a face the data never shows, and a decoder can draw only one of
    two hair colours. Both modes read the same uniform numbers, so for a model without exclusive
    labels they draw the same y from the same generator state."""
    u = torch.rand(n, model.num_labels, generator=generator, device=model.device)
    prior = model.label_prior
    exclusive = model.exclusive.to(model.device)
    if not compatible or not exclusive.any():
        return (u < prior).float()
    y = torch.zeros_like(u, dtype=torch.bool)
    drawn = torch.zeros_like(exclusive[0])
    for i in sorted(range(model.num_labels), key=lambda i: -int(exclusive[i].sum())):  # stable: index order
        earlier = exclusive[i] & drawn
        free = 1.0 - prior[earlier].sum()  # P(no earlier partner present), when those are exclusive
        p = (prior[i] / free).clamp(max=1.0) if free > 0 else prior.new_zeros(())
        y[:, i] = (u[:, i] < p) & ~y[:, earlier].any(1)
        drawn[i] = True
    return y.float()


@torch.no_grad()
def generate(model, y: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Conditional generation: z_c ~ p(z_c | y), z_s from the sampling prior (CCVAE.sample_style).
    y: (B, L) -> z: (B, D)."""
    y = torch.as_tensor(y, dtype=torch.float32, device=model.device)
    if y.dim() != 2 or y.shape[1] != model.num_labels:
        raise ValueError(f"labels must have shape (B, {model.num_labels}), got {tuple(y.shape)}")
    z_c = model.conditional_prior(y).sample(generator=generator)
    return torch.cat([z_c, model.sample_style(y.shape[0], generator=generator)], 1)


@torch.no_grad()
def random_face(model, n: int = 1, *, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces nobody uploaded: y ~ p(y) with no two exclusive labels (``sample_labels(compatible=True)``),
    then z ~ p(z | y) (`generate`). Returns (y (n, L), z (n, D))."""
    y = sample_labels(model, n, generator=generator, compatible=True)
    return y, generate(model, y, generator=generator)


@torch.no_grad()
def is_present(model, z: torch.Tensor, label: int | str) -> torch.Tensor:
    """Which side of label i's slider each face is on: q(y_i = 1 | z_i) >= 0.5, a (...,) bool tensor."""
    return label_probs(model, z)[..., model.label_index(label)] >= 0.5


def swap(z: torch.Tensor, z_source: torch.Tensor, index: int) -> torch.Tensor:
    """z with characteristic `index` taken from z_source (same shape, or (1, D) to broadcast)."""
    return set_latent(z, index, z_source[..., index].expand(z.shape[:-1]))


@torch.no_grad()
def traverse(model, z: torch.Tensor, label: int | str, *, steps: int = 8, margin: float = DEFAULT_MARGIN,
             as_edits: bool = False) -> torch.Tensor:
    """A 1-D walk of label i's latent over its own traversal range, absent -> present: (B, steps, D).
    as_edits=True sets each step as `intervene` (a slider) does: `clear_exclusive` clears the labels
    exclusive with i where i reads present (a black-haired face's Blond_Hair walk turns blond)."""
    i = model.label_index(label)
    lo, hi = traversal_range(model, i, margin=margin)
    values = torch.linspace(lo, hi, steps, device=z.device, dtype=z.dtype)
    out = z.unsqueeze(1).repeat(1, steps, 1)
    out[:, :, i] = values
    return clear_exclusive(model, out, [i]) if as_edits else out


@torch.no_grad()
def traverse_grid(model, z: torch.Tensor, row_label: int | str, col_label: int | str, *, steps: int = 5,
                  margin: float = DEFAULT_MARGIN, as_edits: bool = False) -> torch.Tensor:
    """A 2-D grid: rows walk row_label's range, columns col_label's, each on its own range: (B, steps, steps, D).
    as_edits=True sets each cell as the two sliders do (`clear_exclusive`; a grid over two hair
    colours keeps both of its axes)."""
    i, j = model.label_index(row_label), model.label_index(col_label)
    if i == j:
        raise ValueError(f"a 2-D grid needs two different labels, got {model.label_names[i]!r} twice")
    (ri0, ri1), (rj0, rj1) = traversal_range(model, i, margin=margin), traversal_range(model, j, margin=margin)
    out = z[:, None, None, :].repeat(1, steps, steps, 1)
    out[:, :, :, i] = torch.linspace(ri0, ri1, steps, device=z.device, dtype=z.dtype)[None, :, None]
    out[:, :, :, j] = torch.linspace(rj0, rj1, steps, device=z.device, dtype=z.dtype)[None, None, :]
    return clear_exclusive(model, out, [i, j]) if as_edits else out
