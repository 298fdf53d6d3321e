"""Latent operations as pure tensor functions: the one code path for training figures and the app.

Conventions: z is (B, D) on the model's device; z[:, :L d] are the characteristic latents
(z_i = z[:, model.block(i)], d entries, belongs to label i) and the rest the style latents.
Images are (B, C, H, W) floats in [0, 1]. Labels are given by index or by name. No function
modifies its inputs; randomness comes from an optional torch.Generator (on the model's device),
so results can be reproduced.

A label's slider is one number, its coordinate t_i = u_i . z_i along u_i = w_i / |w_i|, the
direction in which the classifier's logit w_i . z_i + b_i changes. Moving the slider moves z_i
along u_i and keeps the rest of the block (the characteristic's kind: which glasses); resampling
draws the whole block from p(z_i | y_i), on the side where the classifier reads y_i; a swap takes
the whole block. With d = 1, u_i = 1 and t_i = z_i: the paper's latent walk. A model with fitted
kinds (`CCVAE.fit_kinds`) keeps some of a characteristic's variety in z_s; resampling and swaps
move those coordinates with z_i.
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
    return torch.sigmoid(model.classifier_logits(z[..., : model.characteristic_size]))


@torch.no_grad()
def direction(model, label: int | str) -> torch.Tensor:
    """u_i (d,), the unit direction of label i's slider: w_i / |w_i| (1 when d = 1: the latent itself)."""
    i, d = model.label_index(label), model.characteristic_dim
    w = model.classifier_weight.detach()[model.block(i)].float()
    if d == 1 or not w.norm() > 0:
        return torch.full((d,), d ** -0.5, device=w.device)  # d = 1, or an untrained zero w_i: the diagonal
    return w / w.norm()


@torch.no_grad()
def characteristic_prior(model, label: int | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of p(z_i | y_i = v) for label i, each (2, d): row v is y_i = v."""
    loc, scale = model.prior_params()
    b = model.block(label)
    return loc[:, b].detach(), scale[:, b].detach()


@torch.no_grad()
def coordinate(model, z: torch.Tensor, label: int | str) -> torch.Tensor:
    """Label i's slider position t_i = u_i . z_i for z (..., D): (...)."""
    return z[..., model.block(label)] @ direction(model, label).to(z.device, z.dtype)


@torch.no_grad()
def traversal_range(model, label: int | str, *, margin: float = DEFAULT_MARGIN) -> tuple[float, float]:
    """(absent_end, present_end) of label i's slider coordinate t_i (`coordinate`).

    From the y_i = 0 side of p(z_i|y_i=0) (its mean minus margin standard deviations, away from
    the y_i = 1 mean) to the y_i = 1 side of p(z_i|y_i=1) (its mean plus margin standard
    deviations), all along u_i. absent_end > present_end when the y_i = 1 mean is the smaller one.
    """
    u = direction(model, label)
    loc, scale = characteristic_prior(model, label)  # (2, d)
    mu0, mu1 = (loc.float() @ u).tolist()
    s0, s1 = (scale.float().square() @ u.square()).sqrt().tolist()  # the prior's std along u
    sign = 1.0 if mu1 >= mu0 else -1.0
    return mu0 - sign * margin * s0, mu1 + sign * margin * s1


def set_latent(z: torch.Tensor, index: int | slice, value: float | torch.Tensor) -> torch.Tensor:
    """A copy of z with z[..., index] = value (a float or a tensor broadcastable to z[..., index])."""
    out = z.clone()
    out[..., index] = torch.as_tensor(value, dtype=z.dtype, device=z.device)
    return out


@torch.no_grad()
def set_characteristic(model, z: torch.Tensor, label: int | str, z_i: torch.Tensor, *,
                       as_edits: bool = False) -> torch.Tensor:
    """A copy of z (..., D) with label i's whole block set to z_i (..., d) (broadcast; a (d,) mean,
    a donor's block, `sample_characteristic`'s draws). as_edits=True clears exclusive partners (`clear_exclusive`)."""
    i = model.label_index(label)
    out = set_latent(z, model.block(i), torch.as_tensor(z_i, dtype=z.dtype, device=z.device))
    return clear_exclusive(model, out, [i]) if as_edits else out


@torch.no_grad()
def set_coordinate(model, z: torch.Tensor, label: int | str, value: float | torch.Tensor) -> torch.Tensor:
    """A copy of z (..., D) with label i's slider coordinate t_i = value (a float or (...)), moving
    z_i along u_i only: z_i + (value - u_i . z_i) u_i. With d = 1 that is z_i = value."""
    i = model.label_index(label)
    if model.characteristic_dim == 1:
        return set_latent(z, model.block(i), torch.as_tensor(value, dtype=z.dtype, device=z.device)[..., None])
    u = direction(model, i).to(z.device, z.dtype)
    shift = torch.as_tensor(value, dtype=z.dtype, device=z.device) - coordinate(model, z, i)
    return set_latent(z, model.block(i), z[..., model.block(i)] + shift[..., None] * u)


@torch.no_grad()
def intervene(model, z: torch.Tensor, label: int | str, value: float | torch.Tensor) -> torch.Tensor:
    """do(y_i) through z_i, as label i's slider makes it: a copy of z (B, D) with slider
    coordinate t_i = value (`set_coordinate`), and, where that reads present
    (q(y_i = 1 | z_i) >= 0.5), every label j the model keeps exclusive with i
    (`model.exclusive`, e.g. the other hair colours) that reads present set to the mean of
    p(z_j | y_j = 0). Two exclusive latents at "present" describe a face the data never shows
    (black and brown hair), which the decoder can draw only one way; clearing the other one
    makes the edit ask for a face it can draw. Without exclusive labels this is `set_coordinate`.
    """
    i = model.label_index(label)
    return clear_exclusive(model, set_coordinate(model, z, i, value), [i])


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
    C = model.characteristic_size
    out = z.clone()
    present = label_probs(model, out) >= 0.5  # (..., L)
    partners = exclusive[idx].to(present.device)  # (len(idx), L)
    clear = (present[..., idx, None] & partners).any(-2) & present  # (..., L)
    absent_loc = model.prior_params()[0][0].to(out.dtype)  # (C,): means of p(z_j | y_j = 0)
    out[..., :C] = torch.where(model.expand_labels(clear), absent_loc, out[..., :C])
    return out


@torch.no_grad()
def sample_characteristic(model, label: int | str, present: bool | torch.Tensor, n: int,
                          *, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws of the whole block z_i ~ p(z_i | y_i = v) on the side of the classifier that reads v
    (w_i . z_i + b_i >= 0 for v = 1, < 0 for v = 0; `is_present`): (n, d). v = present, a bool or (n,).

    The prior's tail past the classifier's boundary is a face that reads without the
    characteristic: a "new pair of glasses" with none (on the bundled model 1.2 % of the glasses'
    draws and 6.5 % of the earrings'). So a draw x ~ N(mu_v, diag sigma_v^2) already on its side is
    kept as it is, and one past the boundary gets a new t = w . z from N(w . mu_v, w' S w)
    truncated to the side (inverse CDF), then z = x + S w (t - w . x) / (w' S w), the prior
    conditioned on w . z = t (S = diag sigma_v^2). Kept draws have t from the same truncated law,
    so every draw is exactly p(z_i | y_i = v) restricted to the side. With d = 1 this is z_i = t / w_i.
    A label whose w_i is 0 has no boundary: the prior's draw."""
    i = model.label_index(label)
    loc, scale = characteristic_prior(model, i)  # (2, d)
    v = torch.as_tensor(present, device=model.device).long().expand(n)
    eps = torch.randn((n, model.characteristic_dim), generator=generator, device=model.device)
    u = torch.rand(n, generator=generator, device=model.device, dtype=torch.float64)
    x = loc[v] + scale[v] * eps  # (n, d): the prior's draw
    w = model.classifier_weight.detach()[model.block(i)].to(x)
    if not w.norm() > 0:
        return x
    sign = (2 * v - 1).double()  # the side, as the sign of the logit
    var_w = scale[v] ** 2 * w  # S w, (n, d)
    var_t = (var_w * w).sum(-1)  # w' S w: the variance of the logit under the prior, (n,)
    sd_t = var_t.double().sqrt()
    bias = float(model.classifier_bias.detach()[i])
    m = sign * ((loc[v] * w).sum(-1).double() + bias)  # mean of s = sign * logit; the side is s > 0
    side = torch.special.ndtr(m / sd_t)  # P(s > 0) under the prior
    s = (m - sd_t * torch.special.ndtri((u * side).clamp_min(1e-300))).clamp_min(1e-6)  # s | s > 0
    t = (sign * s - bias).to(x)  # the new w . z
    wx = (x * w).sum(-1)
    moved = x + var_w * ((t - wx) / var_t)[:, None]
    keep = (wx + bias >= 0) == (v == 1)  # already on its side, as `is_present` reads it
    return torch.where(keep[:, None], x, moved)


def kind_coordinates(model, z: torch.Tensor, label: int | str, present: bool) -> torch.Tensor:
    """Label i's kind coordinates on one side, z_s . kind_basis[present, i] (`CCVAE.fit_kinds`): (..., K)."""
    basis = model.kind_basis[int(bool(present)), model.label_index(label)].to(z)  # (K, S)
    return z[..., model.characteristic_size:] @ basis.T


@torch.no_grad()
def set_kinds(model, z: torch.Tensor, label: int | str, present: bool, coords: torch.Tensor) -> torch.Tensor:
    """A copy of z (..., D) whose style latents have label i's kind coordinates on side `present`
    set to coords (..., K): z_s + (coords - z_s . B^T) B, B = kind_basis[present, i] (K, S)
    orthonormal; the part of z_s across B is kept. A model without fitted kinds (K = 0) gets z
    back unchanged."""
    if not model.kind_directions:
        return z.clone()
    basis = model.kind_basis[int(bool(present)), model.label_index(label)].to(z)
    out = z.clone()
    out[..., model.characteristic_size:] += (coords.to(z) - kind_coordinates(model, z, label, present)) @ basis
    return out


def resample_latent(model, z: torch.Tensor, label: int | str, *, present: bool,
                    generator: torch.Generator | None = None, as_edits: bool = False) -> torch.Tensor:
    """A new variant of label i's characteristic: the block z_i ~ p(z_i | y_i = present) on that side
    of the classifier (`sample_characteristic`) and, for a model with fitted kinds, the coordinates
    of z_s along which that side's faces vary most, from that side's Gaussian (`CCVAE.fit_kinds`: a
    hat's colour); all else kept. z: (B, D). as_edits=True sets each draw as `intervene` does
    (`clear_exclusive`: a new black hair clears brown)."""
    draws = sample_characteristic(model, label, present, z.shape[0], generator=generator)
    out = set_characteristic(model, z, label, draws, as_edits=as_edits)
    if model.kind_directions:
        out = set_kinds(model, out, label, present, model.sample_kinds(label, present, z.shape[0], generator=generator))
    return out


def resample_style(model, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """New style latents from the sampling prior (N(0, I), or the fitted one: CCVAE.sample_style);
    every characteristic latent kept. z: (B, D)."""
    out = z.clone()
    out[:, model.characteristic_size:] = model.sample_style(z.shape[0], generator=generator).to(out)
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


def swap(model, z: torch.Tensor, z_source: torch.Tensor, label: int | str, *, as_edits: bool = False) -> torch.Tensor:
    """z with label i's whole characteristic block taken from z_source (same shape, or (1, D) to
    broadcast) and, when the model has kinds, the donor's coordinates along its side's kind
    directions (a donor's hat colour comes with its hat). as_edits=True clears exclusive partners
    as a slider would (a donor's hair colour replaces this face's)."""
    out = set_characteristic(model, z, label, z_source[..., model.block(label)], as_edits=as_edits)
    if model.kind_directions:
        donor_present = is_present(model, z_source, label).expand(out.shape[:-1])  # (B,) bool
        for side in (False, True):
            moved = set_kinds(model, out, label, side, kind_coordinates(model, z_source, label, side).expand(*out.shape[:-1], -1))
            out = torch.where((donor_present == side).unsqueeze(-1), moved, out)
    return out


@torch.no_grad()
def traverse(model, z: torch.Tensor, label: int | str, *, steps: int = 8, margin: float = DEFAULT_MARGIN,
             as_edits: bool = False) -> torch.Tensor:
    """A 1-D walk of label i's slider coordinate over its own traversal range, absent -> present,
    z_i moving along u_i only: (B, steps, D). as_edits=True sets each step as `intervene` (a slider)
    does: `clear_exclusive` clears the labels exclusive with i where i reads present (a
    black-haired face's Blond_Hair walk turns blond)."""
    i = model.label_index(label)
    lo, hi = traversal_range(model, i, margin=margin)
    values = torch.linspace(lo, hi, steps, device=z.device, dtype=z.dtype)
    out = set_coordinate(model, z.unsqueeze(1).expand(-1, steps, -1), i, values)
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
    out = z[:, None, None, :].expand(-1, steps, steps, -1)
    out = set_coordinate(model, out, i, torch.linspace(ri0, ri1, steps, device=z.device, dtype=z.dtype)[:, None])
    out = set_coordinate(model, out, j, torch.linspace(rj0, rj1, steps, device=z.device, dtype=z.dtype)[None, :])
    return clear_exclusive(model, out, [i, j]) if as_edits else out
