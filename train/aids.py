"""Training aids: terms a recipe may add to Eq. 1's loss, none of them part of the paper.

- classification weight alpha: the trainer adds alpha * log q(y|x) (`Objective.log_qyx`) to the
  labelled loss, as M2 does. In expectation Eq. 1's own direct classifier gradients cancel
  (`ccvae.objective`), so the classifier learns only through grad(w), whose signal fades as
  q(z|x) narrows under a sharp likelihood; alpha gives it a direct signal. alpha = 0 is Eq. 1.
- the intervention term gamma (`intervention_edits`): a decoded edit of z_i must read as the edit.
- residual emphasis (`emphasised_log_likelihood`): the same log p(x|z), with each pixel's
  gradient scaled by how wrong the decoder is there.

None of them changes a value the objective reports (bound, KL, likelihood scale); they change
only the gradient the loss gives.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ccvae.distributions import upcast
from ccvae.objective import LogLikelihood

FOCUS_PRIOR = (1.0, 0.05)  # edit_focus's pseudo-counts: one edit drawn, 0.05 of it missed, per label


class Emphasis(NamedTuple):
    """Residual emphasis: the power P and the floor eps of `emphasise_residuals`."""
    power: float
    floor: float = 0.01


def check_emphasis(emphasis: Emphasis) -> Emphasis:
    """The emphasis if its power is finite and >= 0 and its floor finite and > 0; else a ValueError."""
    if not (emphasis.power >= 0 and math.isfinite(emphasis.power)):
        raise ValueError(f"residual_emphasis must be a finite power >= 0, got {emphasis.power}")
    if not (emphasis.floor > 0 and math.isfinite(emphasis.floor)):
        raise ValueError(f"residual_emphasis_floor must be a finite number > 0, got {emphasis.floor}")
    return emphasis


def emphasise_residuals(x: torch.Tensor, logits: torch.Tensor, emphasis: Emphasis) -> torch.Tensor:
    """The logits unchanged in value, with each pixel's gradient scaled by how wrong it is.

    w_p = r_p^P / mean_p(r_p^P) per image, with r_p^2 = sum_c (x - sigmoid(logits))^2 + eps^2
    (detached). The result is logits.detach() + w * (logits - logits.detach()): every value a
    likelihood computes from it is the same, and d/d logits_p is multiplied by w_p. With P = 1 a
    Gaussian likelihood's pull on a pixel grows as r_p^2 instead of r_p, so the few pixels the
    decoder gets most wrong (small details such as earrings) are learned sooner; the weights
    average 1 over each image, and a larger eps keeps more of the pull on pixels already nearly
    right (w_p >= eps^P / mean). P = 0: the logits. x, logits: (B, C, H, W); returns (B, C, H, W).
    """
    power, floor = check_emphasis(emphasis)
    if power == 0:
        return logits
    with torch.no_grad():
        r2 = (x - torch.sigmoid(logits)).square().sum(1, keepdim=True).add_(floor * floor)  # (B, 1, H, W)
        w = r2.pow_(power / 2)
        w = w / w.mean((2, 3), keepdim=True)
    detached = logits.detach()
    return detached + w * (logits - detached)


def emphasised_log_likelihood(model, emphasis: Emphasis) -> LogLikelihood | None:
    """log p(x|z) as `model.log_likelihood` computes it, with the gradient reweighted by
    `emphasise_residuals`; None (the model's own) when the power is 0."""
    if check_emphasis(emphasis).power == 0:
        return None

    def log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = upcast(logits)
        return model.log_likelihood(x, emphasise_residuals(x.to(logits.dtype), logits, emphasis))
    return log_likelihood


def edit_focus(drawn: torch.Tensor, focus: float, prior: tuple[float, float] = FOCUS_PRIOR) -> torch.Tensor:
    """Weights (L,) for drawing the label an intervention edit flips, from how often each label's
    edits miss. drawn: (2, L), per label the (decayed) count of edits drawn and the sum of their
    misses 1 - q(y_i = v | z'_i). m_i = (misses_i + a) / (drawn_i + n) with prior (n, a), and
    w_i = (1 - focus) + focus * m_i / mean_j m_j: focus = 0 draws uniformly, focus = 1 in
    proportion to the miss rate; a share `focus` of the edits goes where they miss and every label
    keeps at least 1 - focus of its uniform share. With no edits drawn every m_i is a / n: uniform."""
    if not 0.0 <= focus <= 1.0:
        raise ValueError(f"intervention_focus must lie in [0, 1], got {focus}")
    n, a = prior
    miss = (drawn[1] + a) / (drawn[0] + n)  # (L,)
    return (1 - focus) + focus * miss / miss.mean()


def with_precedence(exclusive: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The exclusive pairs an intervention edit must respect once some labels take precedence.

    exclusive: (L, L) bool, True where labels i and j are never present together (symmetric).
    order: label indices, first = strongest. Label order[k] takes precedence over each label j
    exclusive with it that is not listed before it. Returns (L, L) bool, row i = the label an edit
    adds: entry [i, j] stays True (j is cleared first) unless i takes precedence over j. An edit
    adding Bald to a face with bangs is then drawn as it is, both latents present, and must read
    as bald: the decoder learns which of two contradictory latents wins. The reverse edit (bangs
    onto a bald face) still clears, so the two never pull against each other.
    """
    L = exclusive.shape[0]
    if exclusive.shape != (L, L):
        raise ValueError(f"exclusive must be square, got shape {tuple(exclusive.shape)}")
    if len(set(order)) != len(order) or any(not 0 <= i < L for i in order):
        raise ValueError(f"order must list distinct labels in 0..{L - 1}, got {order}")
    rank = torch.full((L,), len(order), dtype=torch.long)  # unlisted labels rank last
    rank[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
    wins = rank[:, None] < rank[None, :]  # (L, L): i listed before j, or i listed and j not
    return exclusive.bool() & ~wins.to(exclusive.device)


def fill_unknown(model, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y (B, L) with its unknown cells (-1) set to what the classifier reads from z (B, D): the
    labels an intervention edit flips from. Fully known rows are returned as they are."""
    with torch.no_grad():
        read = (model.classifier_logits(z[:, :model.characteristic_size]) > 0).to(y.dtype)
    return torch.where(y >= 0, y, read)


def intervention_edits(model, z: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None,
                       exclusive: torch.Tensor | None = None, focus: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Does a decoded edit read as the edit? z: (B, D) latents of images with labels y (B, L).

    Row b: one label i is flipped, v = 1 - y[b, i], i drawn uniformly or, with `focus` (L,)
    positive weights, in proportion to them (`edit_focus`). z_i (its whole block of d) is replaced
    by a draw from p(z_i | y_i = v); adding label i first replaces z_j of every present label j with
    exclusive[i, j] by a draw from p(z_j | y_j = 0), as the app edits (`ccvae.editing.intervene`),
    so no edit asks for two hair colours. The result is decoded to its mean image x', encoded
    again, and valued log q(y_i = v | z'_i) at the new posterior mean z'_i.

    Returns (value (B,), label (B,) the label each row flipped). The trainer adds gamma * mean(value)
    to the labelled objective: the decoder learns to draw what z_i says rather than what the style
    latents say. The encoder's weights, the classifier and the prior are the judge and take no
    gradient from it; the encoder still does through the latents z other than z_i (it learns not to
    store label i where it would override an edit).
    """
    B, L = y.shape
    present = y > 0.5  # (B, L)
    if focus is None:
        i = torch.randint(0, L, (B, 1), generator=generator, device=z.device)
    else:
        if focus.shape != (L,):
            raise ValueError(f"focus must hold one weight per label, shape ({L},), got {tuple(focus.shape)}")
        i = torch.multinomial(focus.to(z.device, torch.float32).expand(B, L), 1, generator=generator)  # (B, 1)
    v = 1 - y.gather(1, i).long()  # (B, 1)
    d = model.characteristic_dim
    cols = i * d + torch.arange(d, device=z.device)  # (B, d): where z_i sits in z
    loc, scale = (t.detach() for t in model.prior_params())  # (2, L d) each
    eps = torch.randn((B, d), generator=generator, device=z.device, dtype=loc.dtype)
    z_i = loc[v, cols] + scale[v, cols] * eps  # (B, d): z_i ~ p(z_i | y_i = v)
    z_edit = z.scatter(1, cols, z_i.to(z.dtype))
    if exclusive is not None:
        if exclusive.shape != (L, L):
            raise ValueError(f"exclusive has shape {tuple(exclusive.shape)}, expected ({L}, {L})")
        ex = exclusive.to(z.device).bool() & ~torch.eye(L, dtype=torch.bool, device=z.device)
        drop = model.expand_labels(ex[i.squeeze(1)] & present & (v == 1))  # (B, L d): adding i clears the present j it excludes
        absent = loc[0] + scale[0] * torch.randn((B, L * d), generator=generator, device=z.device, dtype=loc.dtype)
        C = L * d
        z_edit = torch.cat([torch.where(drop, absent.to(z.dtype), z_edit[:, :C]), z_edit[:, C:]], 1)
    x_edit = model.decode(z_edit)  # (B, C, H, W), the mean image
    judge = {name: p.detach() for name, p in model.encoder.named_parameters()}
    loc_edit, _ = torch.func.functional_call(model.encoder, judge, (x_edit,))
    z_back = upcast(loc_edit.gather(1, cols))  # (B, d): z'_i
    w = model.classifier_weight.detach()[cols]  # (B, d)
    logit = (z_back * w).sum(1, keepdim=True) + model.classifier_bias.detach()[i]
    value = -F.binary_cross_entropy_with_logits(logit, v.to(logit.dtype), reduction="none").squeeze(1)
    return value, i.squeeze(1)
