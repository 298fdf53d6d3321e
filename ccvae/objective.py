"""The CCVAE objective: the supervised bound (paper Eq. 1) and the unsupervised ELBO.

Both return an `Objective`: the per-example bound, the scalar loss whose gradient training
follows, and named terms for logging. Shapes: B images, L labels, D latents, K samples.

Supervised (x, y observed), Eq. 1 of Joy et al. (2021):

    L(x, y) = E_q(z|x)[ w(z_c) log( p(x|z) p(z|y) / (q(y|z_c) q(z|x)) ) ] + log q(y|x) + log p(y),
    w(z_c)  = q(y|z_c) / q(y|x),     q(y|x) ~= (1/K) sum_k q(y|z_c^k),   z^k ~ q(z|x).

All K samples come from one encoder pass; z^1 is also the sample the decoder sees, so the value
is the plain single-sample Monte Carlo estimate of Eq. 1 with a K-sample q(y|x). log w is
computed in log space and never exceeds log K, because z^1 is one of the K samples.

Unsupervised (x only): the ELBO with y marginalised exactly. q(y|z_c), p(z_c|y) and p(y) factorise
over labels, so E_q(y|z_c)[.] is a sum over y_i in {0, 1} for each label: 2L terms, not 2^L,
and no sampled y (the official PyTorch code samples y with no score-function term, so its
unlabelled data never trains the classifier; here the classifier gets exact gradients).

Which factors carry gradients (supervised term). Every factor does, through the
reparameterised z and through the classifier. For the weight w, the gradient of E[w R]
(R = the log-ratio in the bracket) has a score-like part E[grad(w) R]. Because E_q(z|x)[w] = 1,
this part is unchanged by subtracting anything from R that does not depend on z_c, and the
terms of R that depend only on z_s (log p(z_s) - log q(z_s|x)) contribute nothing in
expectation. The large, noisy part is log p(x|z): it is thousands of nats for a sharp
likelihood, and multiplying grad(w) by it is what made the official code unstable at small
likelihood scales. With weight_grad="characteristic" (the default) the score part uses
R_c(z_c) = log p(z_c|y) - log q(z_c|x) - log q(y|z_c) averaged over all K samples, and drops the
reconstruction and style terms from it; the pathwise gradient w * grad(R) keeps them all.
weight_grad="full" differentiates the single-sample estimate as written. The value of the bound
is the same either way. Note that in expectation the direct classifier gradients of log q(y|x)
and of -w log q(y|z_c) cancel: the classifier learns through grad(w) R, which is why that
part is kept, with the cheaper, lower-variance R_c.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .distributions import DiagonalGaussian, Emphasis, gaussian_log_prob, upcast

WEIGHT_GRADS = ("characteristic", "full")
JUDGES = ("classifier", "latent")  # what values an edit in intervention_consistency


@dataclass
class Objective:
    """bound: (B,) the per-example bound; loss: scalar to minimise; terms: detached 0-dim tensors
    for logging (on the model's device: reading them with float() waits for the GPU, so a training
    loop sums them as tensors and reads the sums once per log line)."""

    bound: torch.Tensor
    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    edits: torch.Tensor | None = None  # (2, L) with the intervention term: per label, edits drawn and their misses


def log_label_prior(model, y: torch.Tensor) -> torch.Tensor:
    """log p(y) for y (..., L) in {0, 1}: (...)."""
    pi = model.label_prior
    return (y * pi.log() + (1 - y) * torch.log1p(-pi)).sum(-1)


def log_classifier(model, z_c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log q(y | z_c) = sum_i log q(y_i | z_i), for z_c (..., L), y broadcastable: (...)."""
    logits = model.classifier_logits(z_c)
    return -F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype).expand_as(logits), reduction="none").sum(-1)


def _log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).sum(-1)


def supervised(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int = 100,
    generator: torch.Generator | None = None,
    z: torch.Tensor | None = None,
    posterior: DiagonalGaussian | None = None,
    weight_grad: str = "characteristic",
    classification_weight: float = 0.0,
    style_kl_weight: float = 1.0,
    intervention_weight: float = 0.0,
    intervention_batch: int = 16,
    intervention_exclusive: torch.Tensor | None = None,
    intervention_clear: bool = False,
    intervention_judge: str = "classifier",
    intervention_focus: torch.Tensor | None = None,
    emphasis: float | Emphasis = 0.0,
) -> Objective:
    """Eq. 1 for a labelled batch. x: (B, C, H, W) in [0, 1]; y: (B, L) in {0, 1}.

    classification_weight: alpha >= 0 adds alpha * log q(y|x) to the training loss only (not to
    the bound), as M2 does. In expectation Eq. 1's own direct classifier gradients cancel (see
    the module docstring), so the classifier learns only through grad(w), whose signal fades as
    q(z|x) narrows under a sharp likelihood; alpha gives it a direct signal. alpha = 0 is Eq. 1.
    style_kl_weight: beta >= 1 adds (beta - 1) * KL(q(z_s|x) || N(0, I)) to the training loss only,
    a capacity limit on the style latents: under a sharp likelihood the encoder otherwise copies
    label information into z_s too, and the decoder then ignores an edit of z_i. beta = 1 is Eq. 1.
    intervention_weight: gamma >= 0 adds gamma * mean log q(y_i = v | z'_i) over the first
    `intervention_batch` rows to the training loss only: each of those rows has one label flipped
    in its latent and must read as flipped after decoding and encoding again (see
    `intervention_consistency`). gamma = 0 is Eq. 1. intervention_exclusive: optional (L, L) bool,
    True where two labels are never both present in the data (row = the label added; lifted one way
    by `with_precedence`); an edit that would make such a pair
    present (a second hair colour) is not drawn, or with intervention_clear=True it is drawn and
    the other label cleared first, as `editing.intervene` edits. intervention_judge: "classifier"
    (the edit must read as y_i = v) or "latent" (it must encode back to the value z_i was given);
    see `intervention_consistency`. intervention_focus: optional (L,) positive weights by which the
    label to flip is drawn in proportion instead of uniformly (`edit_focus`); the Objective's `edits`
    then counts, per label, the edits drawn and their misses (1 - q(y_i = v | z'_i)).
    emphasis: a power, or `distributions.Emphasis(power, floor)`; scales the gradient of the
    decoder's output at each pixel by how wrong it is there, leaving every value as it is
    (`distributions.emphasise_residuals`; 0 = Eq. 1's gradient).

    z: optional samples (K, B, D) to use instead of drawing them (z[0] is decoded; of the others
    only z_c is used); drawn here, only z_c gets K samples and z_s one. posterior:
    optional q(z|x) already computed for x. The loss is -mean(bound) with the gradient
    described in the module docstring.
    """
    if weight_grad not in WEIGHT_GRADS:
        raise ValueError(f"unknown weight_grad {weight_grad!r}; expected one of {WEIGHT_GRADS}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if intervention_weight < 0 or intervention_batch < 1:
        raise ValueError(f"intervention_weight must be >= 0 and intervention_batch >= 1, "
                         f"got {intervention_weight} and {intervention_batch}")
    if intervention_judge not in JUDGES:
        raise ValueError(f"unknown intervention_judge {intervention_judge!r}; expected one of {JUDGES}")
    L = model.num_labels
    y = y.to(torch.promote_types(y.dtype, torch.float32)) if y.is_floating_point() else y.float()
    if y.shape != (x.shape[0], L):
        raise ValueError(f"labels have shape {tuple(y.shape)}, expected ({x.shape[0]}, {L})")
    q = posterior if posterior is not None else model.encode(x)
    loc_c, scale_c, loc_s, scale_s = q.loc[:, :L], q.scale[:, :L], q.loc[:, L:], q.scale[:, L:]
    if z is None:
        # Only z_c needs K samples (for q(y|x)); z_s is needed once, for z^1. At a
        # reparameterised sample, log N(loc + scale * eps; loc, scale) = log N(eps; 0, 1) - log scale,
        # with the same value and the same gradient as evaluating the density at z.
        eps_c = torch.randn((k, *loc_c.shape), generator=generator, device=loc_c.device, dtype=loc_c.dtype)
        eps_s = torch.randn(loc_s.shape, generator=generator, device=loc_s.device, dtype=loc_s.dtype)
        z_c = loc_c + scale_c * eps_c  # (K, B, L)
        z0 = torch.cat([z_c[0], loc_s + scale_s * eps_s], -1)  # (B, D), the sample the decoder sees
        log_qzc = _log_standard_normal(eps_c) - scale_c.log().sum(-1)  # (K, B)
        log_qzs = _log_standard_normal(eps_s) - scale_s.log().sum(-1)  # (B,)
    else:
        k = z.shape[0]
        z_c, z0 = z[..., :L], z[0]  # (K, B, L), (B, D)
        log_qzc = gaussian_log_prob(z_c, loc_c, scale_c).sum(-1)  # (K, B)
        log_qzs = gaussian_log_prob(z0[:, L:], loc_s, scale_s).sum(-1)  # (B,)
    log_px = model.log_likelihood(x, model.decode_logits(z0), emphasis=emphasis)  # (B,)

    log_qy_zc = log_classifier(model, z_c, y)  # (K, B)
    log_qyx = torch.logsumexp(log_qy_zc, 0) - math.log(k)  # (B,)
    log_w = log_qy_zc - log_qyx  # (K, B), <= log K
    w = log_w.exp()

    prior = model.conditional_prior(y)  # over (B, L)
    log_pzc = prior.log_prob(z_c).sum(-1)  # (K, B)
    log_pzs = _log_standard_normal(z0[:, L:])  # (B,)
    log_py = log_label_prior(model, y)  # (B,)

    r_c = log_pzc - log_qzc - log_qy_zc  # (K, B): the part of the log-ratio that depends on z_c
    r0 = log_px + r_c[0] + log_pzs - log_qzs  # (B,): the full log-ratio at z^1
    bound = w[0] * r0 + log_qyx + log_py  # (B,)

    if weight_grad == "full":
        surrogate = bound
    else:  # same value; score part of grad(w) from R_c over all K samples
        surrogate = bound - (w[0] - w[0].detach()) * r0.detach() + ((w - w.detach()) * r_c.detach()).mean(0)

    with torch.no_grad():
        pred = model.classifier_logits(q.loc[:, :L]) > 0
        terms = {
            "bound": bound.mean(),
            "reconstruction": -log_px.mean(),
            "kl": (log_qzc[0] + log_qzs - log_pzc[0] - log_pzs).mean(),
            "log_qyx": log_qyx.mean(),
            "log_py": log_py.mean(),
            "weight_mean": w[0].mean(),
            "weight_max": w[0].max(),
            "log_weight_std": log_w.std() if log_w.numel() > 1 else torch.zeros((), device=log_w.device),
            "accuracy": (pred == y.bool()).float().mean(),
            "likelihood_scale": model.likelihood_scale(),
        }
    loss = -(surrogate + classification_weight * log_qyx).mean() + _extra_style_kl(model, q, style_kl_weight)
    drawn = None
    if intervention_weight > 0:
        edit = _judged_edits(model, z0[:intervention_batch], y[:intervention_batch], generator=generator,
                             exclusive=intervention_exclusive, clear=intervention_clear, focus=intervention_focus)
        loss = loss - intervention_weight * edit[intervention_judge].mean()
        terms["intervention_accuracy"] = (edit["classifier"].detach() > -math.log(2)).float().mean()
        terms["intervention_latent_error"] = (-2 * edit["latent"].detach()).sqrt().mean()
        miss = 1 - edit["classifier"].detach().float().exp()  # (b,): 1 - q(y_i = v | z'_i)
        drawn = torch.zeros((2, L), device=miss.device)
        drawn[0].index_add_(0, edit["label"], torch.ones_like(miss))
        drawn[1].index_add_(0, edit["label"], miss)
    return Objective(bound=bound, loss=loss, terms=terms, edits=drawn)


FOCUS_PRIOR = (1.0, 0.05)  # edit_focus's pseudo-counts: one edit drawn, 0.05 of it missed, per label


def edit_focus(drawn: torch.Tensor, focus: float, prior: tuple[float, float] = FOCUS_PRIOR) -> torch.Tensor:
    """Weights (L,) for drawing the label an intervention edit flips, from how often each label's
    edits miss. drawn: (2, L), per label the (decayed) count of edits drawn and the sum of their
    misses 1 - q(y_i = v | z'_i) (`supervised`'s Objective.edits, summed). m_i = (misses_i + a) /
    (drawn_i + n) with prior (n, a), and w_i = (1 - focus) + focus * m_i / mean_j m_j: focus = 0
    draws uniformly, focus = 1 in proportion to the miss rate, in between a mixture of the two (a
    share `focus` of the edits goes where they miss; every label keeps at least 1 - focus of its
    uniform share). With no edits drawn yet every m_i is the prior's a / n: uniform."""
    if not 0.0 <= focus <= 1.0:
        raise ValueError(f"the intervention focus must lie in [0, 1], got {focus}")
    n, a = prior
    miss = (drawn[1] + a) / (drawn[0] + n)  # (L,)
    return (1 - focus) + focus * miss / miss.mean()


def with_precedence(exclusive: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The exclusive pairs an intervention edit must respect once some labels take precedence.

    exclusive: (L, L) bool, True where labels i and j are never present together (symmetric).
    order: label indices, first = strongest. Label order[k] takes precedence over each label j
    exclusive with it that is not listed before it (listed later, or not at all). Returns (L, L)
    bool, row i = the label an edit adds: entry [i, j] stays True (the edit is blocked, or j cleared
    first) unless i takes precedence over j. An edit adding Bald to a face with bangs is then drawn
    as it is, both latents present, and must read as bald: the decoder learns which of two
    contradictory latents wins, which the plain intervention metric asks and the data never shows.
    The reverse edit (bangs onto a bald face) stays blocked, so the two never pull against each other.
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


def intervention_consistency(model, z: torch.Tensor, y: torch.Tensor, *,
                             generator: torch.Generator | None = None,
                             exclusive: torch.Tensor | None = None, clear: bool = False,
                             judge: str = "classifier", focus: torch.Tensor | None = None) -> torch.Tensor:
    """Does a decoded edit read as the edit? z: (B, D) latents of images with labels y (B, L).

    Row b: one label i ~ U{0..L-1} is flipped, v = 1 - y[b, i]; with `exclusive` (L, L) bool
    (row i = the label added; True: adding i must respect a present j, as labels never present
    together in the data must; `with_precedence` lifts it one way), i is drawn uniformly from the
    labels whose flip is compatible with the row instead: removing a label always is, adding
    label i is not while some label j with exclusive[i, j] is present. With `focus` (L,) positive
    weights, label i is drawn with probability in proportion to focus[i] among those (`edit_focus`).
    Adding Brown_Hair to a black-haired face asks for a face the data never shows, and the opposite
    edit on a brown-haired face decodes the same two latents to the other colour: trained together, the
    two pull the decoder apart. With clear=True any flip is drawn instead, and adding label i first
    replaces z_j of every present label j exclusive with it by a draw from p(z_j | y_j = 0): the
    edit the app makes (`editing.intervene`), which asks for a face the data can show (brown hair
    on a blond face: blond cleared). z_i is replaced by a draw from
    p(z_i | y_i = v), the result decoded to its mean image x' and encoded again, and the value is
    log q(y_i = v | z'_i) at the new posterior mean z'_i: (B,). Not part of Eq. 1: a training aid
    (`supervised`'s intervention_weight) that asks the decoder to draw what z_i says rather than
    what the style latents say. The encoder, the classifier and the prior are the judge here and
    take no gradient from it; the decoder does, and so does the encoder through the latents z
    other than z_i (it learns not to store label i where it would override an edit).

    judge="latent" values the edit by how well the new posterior mean z'_i recovers the value it
    was given instead: -0.5 * ((z'_i - z_i) / sigma_{i,v})^2, with sigma_{i,v} the scale of
    p(z_i | y_i = v) (the log density of z'_i under N(z_i, sigma^2), less its constant; the
    InfoGAN-style latent regression). The classifier's reading saturates once z'_i is past its
    boundary, so a faint earring or an olive mix of grey and brown that reads barely present
    costs nothing; this value keeps asking for the characteristic as strong, and as varied, as z_i.
    """
    if judge not in JUDGES:
        raise ValueError(f"unknown judge {judge!r}; expected one of {JUDGES}")
    return _judged_edits(model, z, y, generator=generator, exclusive=exclusive, clear=clear, focus=focus)[judge]


def _judged_edits(model, z: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None,
                  exclusive: torch.Tensor | None, clear: bool, focus: torch.Tensor | None = None
                  ) -> dict[str, torch.Tensor]:
    """One drawn edit per row, decoded and encoded again: {judge: value (B,)} for every judge, and
    "label": the label each row flipped (B,)."""
    B, L = y.shape
    ex = None
    if exclusive is not None:
        if exclusive.shape != (L, L):
            raise ValueError(f"exclusive has shape {tuple(exclusive.shape)}, expected ({L}, {L})")
        ex = exclusive.to(z.device).bool() & ~torch.eye(L, dtype=torch.bool, device=z.device)
    present = y > 0.5  # (B, L)
    if focus is not None:
        if focus.shape != (L,):
            raise ValueError(f"focus must hold one weight per label, shape ({L},), got {tuple(focus.shape)}")
        focus = focus.to(z.device, torch.float32)
    if ex is None or clear:
        i = (torch.randint(0, L, (B, 1), generator=generator, device=z.device) if focus is None
             else torch.multinomial(focus.expand(B, L), 1, generator=generator))
    else:
        blocked = (present.float() @ ex.float().T) > 0  # (B, L): some present j excludes i
        allowed = (present | ~blocked).float()  # never empty: a present label can go, and with none present nothing blocks
        i = torch.multinomial(allowed if focus is None else allowed * focus, 1, generator=generator)  # (B, 1)
    v = 1 - y.gather(1, i).long()  # (B, 1)
    loc, scale = (t.detach() for t in model.prior_params())  # (2, L) each
    eps = torch.randn((B, 1), generator=generator, device=z.device, dtype=loc.dtype)
    z_i = loc[v, i] + scale[v, i] * eps  # (B, 1): z_i ~ p(z_i | y_i = v)
    z_edit = z.scatter(1, i, z_i.to(z.dtype))
    if ex is not None and clear:
        # adding i: every present label exclusive with it goes to a draw from p(z_j | y_j = 0)
        drop = ex[i.squeeze(1)] & present & (v == 1)  # (B, L)
        absent = loc[0] + scale[0] * torch.randn((B, L), generator=generator, device=z.device, dtype=loc.dtype)
        z_edit = torch.cat([torch.where(drop, absent.to(z.dtype), z_edit[:, :L]), z_edit[:, L:]], 1)
    x_edit = model.decode(z_edit)  # (B, C, H, W), the mean image
    judge = {name: p.detach() for name, p in model.encoder.named_parameters()}
    loc_edit, _ = torch.func.functional_call(model.encoder, judge, (x_edit,))
    z_back = upcast(loc_edit.gather(1, i))  # (B, 1): z'_i
    logit = z_back * model.classifier_weight.detach()[i] + model.classifier_bias.detach()[i]
    return {"classifier": -F.binary_cross_entropy_with_logits(logit, v.to(logit.dtype), reduction="none").squeeze(1),
            "latent": (-0.5 * ((z_back - upcast(z_i)) / scale[v, i]) ** 2).squeeze(1),
            "label": i.squeeze(1)}


def unsupervised(
    model,
    x: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    z: torch.Tensor | None = None,
    posterior: DiagonalGaussian | None = None,
    style_kl_weight: float = 1.0,
    emphasis: float | Emphasis = 0.0,
) -> Objective:
    """The ELBO with labels marginalised exactly, for an unlabelled batch x (B, C, H, W).

        ELBO = E_q(z|x)[ log p(x|z) + log p(z_s) - log q(z|x)
                         + sum_i sum_{v in {0,1}} q(y_i=v|z_i) (log p(z_i|y_i=v) + log p(y_i=v) - log q(y_i=v|z_i)) ]

    z: optional sample (B, D) to use instead of drawing one. style_kl_weight, emphasis: as in `supervised`.
    """
    L = model.num_labels
    q = posterior if posterior is not None else model.encode(x)
    if z is None:
        z = q.sample(generator=generator)  # (B, D)
    log_px = model.log_likelihood(x, model.decode_logits(z), emphasis=emphasis)  # (B,)
    z_c = z[:, :L]
    logits = model.classifier_logits(z_c)  # (B, L)
    log_q = torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], 1)  # (B, 2, L): log q(y_i = v | z_i)
    loc, scale = model.prior_params()  # (2, L)
    log_pz = gaussian_log_prob(upcast(z_c).unsqueeze(1), loc, scale)  # (B, 2, L): log p(z_i | y_i = v)
    pi = model.label_prior
    log_py = torch.stack([torch.log1p(-pi), pi.log()])  # (2, L)
    per_label = (log_q.exp() * (log_pz + log_py - log_q)).sum(1)  # (B, L)
    log_qz = q.log_prob(z).sum(-1)  # (B,)
    bound = log_px + _log_standard_normal(z[:, L:]) - log_qz + per_label.sum(-1)
    with torch.no_grad():
        terms = {
            "bound": bound.mean(),
            "reconstruction": -log_px.mean(),
            "label_entropy": -(log_q.exp() * log_q).sum((1, 2)).mean(),
            "likelihood_scale": model.likelihood_scale(),
        }
    return Objective(bound=bound, loss=-bound.mean() + _extra_style_kl(model, q, style_kl_weight), terms=terms)


def _extra_style_kl(model, q: DiagonalGaussian, style_kl_weight: float) -> torch.Tensor:
    """(beta - 1) * mean over the batch of the analytic KL(q(z_s|x) || N(0, I)); 0 for beta = 1."""
    if style_kl_weight == 1.0:
        return torch.zeros((), device=q.loc.device)
    if style_kl_weight < 0:
        raise ValueError(f"style_kl_weight must be >= 0, got {style_kl_weight}")
    L = model.num_labels
    kl = DiagonalGaussian(q.loc[:, L:], q.scale[:, L:]).kl_standard_normal().sum(-1)
    return (style_kl_weight - 1.0) * kl.mean()
