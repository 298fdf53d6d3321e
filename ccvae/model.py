"""The CCVAE model (Joy et al., "Capturing Label Characteristics in VAEs", ICLR 2021).

Generative story, for L binary labels, d dimensions per characteristic and a latent
z = [z_c, z_s] of size D (z_c holds L blocks of d entries, block i = z_i belonging to label i;
z_s has S = D - L d style entries):

    y_i        ~ Bernoulli(pi_i)                               label prior p(y), pi = labelled frequencies
    z_i | y_i  ~ N(mu_{i, y_i}, diag sigma_{i, y_i}^2)         conditional prior p(z_c | y), in d dims
    z_s        ~ N(0, I)                                       style latents (training; see below)
    x | z      ~ Laplace / Gaussian / Bernoulli(sigmoid(decoder(z)))     p(x | z)

Inference model:

    z | x      ~ N(encoder_loc(x), diag(encoder_scale(x)^2))             q(z | x)
    y_i | z_i  ~ Bernoulli(sigmoid(w_i . z_i + b_i))                     q(y_i | z_i), diagonal

Label i is read from its own block alone, so whatever distinguishes y_i must live in z_i; the
conditional prior p(z_i | y_i) keeps the *variation* of that characteristic (which glasses,
which smile), so resampling z_i under y_i = 1 gives a new variant of it. With d = 1 (the
paper) z_i is one number and resampling can only make a characteristic stronger or weaker;
with d > 1 the directions of z_i orthogonal to w_i are free to hold its kinds (a frame's shape,
a hat's colour) while w_i . z_i says whether it is there.

Layout: z_c = z[..., :L d], block i = z[..., i d:(i + 1) d]. The per-label parameters are stored
flat, in the same layout: classifier_weight (L d,), prior_loc and prior_raw_scale (2, L d), so a
model with d = 1 has exactly the paper's parameters and values.

Training fits q(z_s | x) to N(0, I), but the encoder need not fill it: the aggregate posterior
q(z_s) = E_x q(z_s | x) can be narrower, or correlated, and prior samples then fall where the
decoder never learned to draw, and conditional generation from N(0, I) fails more often.
`fit_style_prior` fits a full-covariance Gaussian N(m, L L^T) to samples of q(z_s) once
training is over (ex-post density estimation, Ghosh et al. 2020; the second stage of Dai & Wipf
2019, with one Gaussian); generation then draws z_s = m + L eps. The objective still uses N(0, I): the fitted prior changes sampling only.

Where a characteristic's kinds end up. Nothing in Eq. 1 says a hat's colour belongs in z_i rather
than z_s, and a trained encoder often keeps it in z_s, along directions in which faces with the
label vary and faces without it do not. `fit_kinds` finds those directions per label and side
after training (the generalised eigenvectors of cov(z_s | y_i = v) against cov(z_s | y_i = 1 - v)
along which side v varies at least twice as much) and fits a Gaussian to side v's coordinates
along them; resampling a characteristic on side v (`editing.resample_latent`) then redraws those
coordinates too, so Resample Wearing_Hat gives another hat colour, and Resample No_Beard on a
bearded face another beard. Like the fitted style prior, it changes sampling only.

The objective lives in `ccvae.objective`, latent operations in `ccvae.editing`; this module holds
the networks, the parameters, and checkpoint I/O (through `ccvae.hub`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin

from .distributions import LIKELIHOODS, DiagonalGaussian, image_log_likelihood, upcast
from .networks import Decoder, Encoder, default_channels
from .photos import check_error_stats, check_framing

FORMAT_VERSION = 1
# config keys earlier versions wrote and this one refuses (strict loading), with what became of them
REMOVED_CONFIG_KEYS = {
    "refine_channels": "the refining decoder stage was removed; every model uses the paper's decoder end",
    "learn_scale": "the likelihood scale is always learned",
}


class CCVAE(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="ccvae",
    tags=["ccvae", "vae", "disentanglement", "image-editing"],
    repo_url="https://github.com/thwjoy/ccvae",
    license="mit",
):
    """Characteristic-capturing VAE. Every argument is keyword-only and travels in config.json.

    label_names: the L binary labels, in order; z[:, i d:(i + 1) d] is label i's characteristic latent.
    latent_dim: D, the total latent size (z_c and z_s together); D >= L d.
    characteristic_dim: d, the size of each label's characteristic latent z_i (1: the paper).
    image_size: 64 or 128 (any 4 * 2**n); images are (B, in_channels, image_size, image_size).
    channels: the encoder's conv channels (default (32, 32, 64, 128) at 64x64).
    hidden_dim: width of the 1x1 bottleneck between convolutions and latents.
    label_gates: the decoder also reads a learned soft step sigmoid(s_i (z_i - c_i)) of every
        characteristic latent (of v_i . z_i, a learned direction, when d > 1; networks.Decoder), so
        it can draw a label fully wherever z_i reads present; with d > 1 the rest of z_i reaches the
        decoder multiplied by that step, so it can only draw the label's kind. False: the paper's decoder.
    decoder_film: the decoder's intermediate feature maps are also scaled and shifted channel-wise
        by a linear map of z that starts at zero (FiLM; networks.Decoder); False: the paper's decoder.
    likelihood: "laplace" | "gaussian" | "bernoulli", the family of p(x|z).
    likelihood_scale: the initial scale of p(x|z); one global scale is learned by maximum likelihood.
    prior_separation: initial distance between the means of p(z_i|y_i=0) and p(z_i|y_i=1)
        (at -/+ sep/2 along the diagonal direction (1, .., 1)/sqrt(d), where w_i starts; the
        official code starts both at 0, so nothing breaks the tie).
    exclusive_labels: pairs of label names the training data never shows present together
        (the hair colours), found by training; `editing.intervene` clears one when the other is
        set present, so an edit asks for a face the data can show. Empty: no pair.
    fitted_style_prior: generation samples z_s from a Gaussian fitted to the aggregate posterior
        (the buffers style_prior_loc (S,) and style_prior_tril (S, S), S = latent_dim - L d, set by
        `fit_style_prior`) instead of N(0, I). False: N(0, I), as in the paper.
    kind_directions: K, the most directions of z_s per label and side that `fit_kinds` keeps (the
        buffers kind_basis (2, L, K, S), orthonormal rows, zero where a side has fewer; kind_loc
        (2, L, K) and kind_tril (2, L, K, K), the Gaussian of side v's coordinates along its own
        directions; v = 0: faces without the label, 1: with it). 0: none (the paper): resampling a
        characteristic redraws z_i only.
    framing: where the training images have their eyes ({"left_eye": [x, y], "right_eye": [x, y],
        "aspect": a, "crop": "..."}, [0, 1] image coordinates; `ccvae.photos`), so a photo can be
        aligned like them. None: unknown (photos are centre-cropped).
    reconstruction_error: quantiles of the reconstruction error of held-out images ({"images",
        "n", "p50", "p90", "p99", "max"}; `photos.fit_reconstruction_error`), against which an
        upload is found out of domain. None: not measured.
    """

    def __init__(
        self,
        *,
        label_names: Sequence[str],
        latent_dim: int = 45,
        characteristic_dim: int = 1,
        image_size: int = 64,
        in_channels: int = 3,
        channels: Sequence[int] | None = None,
        hidden_dim: int = 256,
        label_gates: bool = False,
        decoder_film: bool = False,
        likelihood: str = "laplace",
        likelihood_scale: float = 0.1,
        prior_separation: float = 2.0,
        exclusive_labels: Sequence[Sequence[str]] = (),
        fitted_style_prior: bool = False,
        kind_directions: int = 0,
        framing: Mapping | None = None,
        reconstruction_error: Mapping | None = None,
    ):
        super().__init__()
        label_names = [str(n) for n in label_names]
        if not label_names:
            raise ValueError("label_names is empty: CCVAE needs at least one binary label")
        if len(set(label_names)) != len(label_names):
            raise ValueError(f"label_names has duplicates: {label_names}")
        if int(hidden_dim) < 1:
            raise ValueError(f"hidden_dim must be positive, got {hidden_dim}")
        if isinstance(characteristic_dim, bool) or int(characteristic_dim) != characteristic_dim or characteristic_dim < 1:
            raise ValueError(f"characteristic_dim must be a whole number >= 1, got {characteristic_dim!r}")
        if latent_dim < len(label_names) * int(characteristic_dim):
            raise ValueError(f"latent_dim={latent_dim} is smaller than the characteristic latents need "
                             f"({len(label_names)} labels x characteristic_dim {characteristic_dim})")
        if isinstance(kind_directions, bool) or int(kind_directions) != kind_directions or kind_directions < 0:
            raise ValueError(f"kind_directions must be a whole number >= 0, got {kind_directions!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
        if not likelihood_scale > 0:
            raise ValueError(f"likelihood_scale must be positive, got {likelihood_scale}")
        channels = tuple(int(c) for c in (channels if channels is not None else default_channels(image_size)))
        pairs = []
        for pair in exclusive_labels:
            pair = [str(n) for n in pair] if not isinstance(pair, str) else [pair]
            if len(pair) != 2 or pair[0] == pair[1] or not set(pair) <= set(label_names):
                raise ValueError(f"exclusive_labels: {pair} is not a pair of two different labels among {label_names}")
            pairs.append(sorted(pair, key=label_names.index))
        pairs = sorted({tuple(p) for p in pairs}, key=lambda p: (label_names.index(p[0]), label_names.index(p[1])))
        self.config = dict(
            label_names=label_names, latent_dim=int(latent_dim), characteristic_dim=int(characteristic_dim), image_size=int(image_size),
            in_channels=int(in_channels), channels=list(channels), hidden_dim=int(hidden_dim),
            label_gates=bool(label_gates),
            decoder_film=bool(decoder_film),
            likelihood=likelihood, likelihood_scale=float(likelihood_scale),
            prior_separation=float(prior_separation), exclusive_labels=[list(p) for p in pairs],
            fitted_style_prior=bool(fitted_style_prior),
            kind_directions=int(kind_directions),
            framing=None if framing is None else check_framing(framing),
            reconstruction_error=None if reconstruction_error is None else check_error_stats(reconstruction_error),
        )
        L, d = len(label_names), int(characteristic_dim)
        # (L, L) bool, symmetric: derived from the config once, read on every edit (editing.intervene)
        self._exclusive = torch.zeros(L, L, dtype=torch.bool)
        for a, b in pairs:
            i, j = label_names.index(a), label_names.index(b)
            self._exclusive[i, j] = self._exclusive[j, i] = True
        net = dict(image_size=image_size, channels=channels, hidden_dim=hidden_dim, latent_dim=latent_dim)
        self.encoder = Encoder(in_channels=in_channels, **net)
        self.decoder = Decoder(out_channels=in_channels, gates=L if label_gates else 0, gate_dim=d,
                               film=bool(decoder_film), **net)
        # q(y_i | z_i) = sigmoid(w_i . z_i + b_i); w flat (L d,), starting at (1, .., 1)/sqrt(d)
        self.classifier_weight = nn.Parameter(torch.full((L * d,), d ** -0.5))
        self.classifier_bias = nn.Parameter(torch.zeros(L))
        # p(z_i | y_i = v): row v of (2, L d); scale = softplus(raw) + eps, starting at 1; the two
        # means start prior_separation apart along w_i's starting direction
        half = prior_separation / 2 * d ** -0.5
        self.prior_loc = nn.Parameter(torch.stack([torch.full((L * d,), -half), torch.full((L * d,), half)]))
        self.prior_raw_scale = nn.Parameter(torch.full((2, L * d), _softplus_inverse(1.0)))
        # p(x | z) scale, in log space
        self.log_likelihood_scale = nn.Parameter(torch.tensor(float(likelihood_scale)).log())
        # p(y_i = 1): set from the labelled data's frequencies by training, saved with the weights
        self.register_buffer("label_prior", torch.full((L,), 0.5))
        if fitted_style_prior:
            if latent_dim == L * d:
                raise ValueError(f"fitted_style_prior needs style latents, but latent_dim={latent_dim} leaves none "
                                 f"after {L} characteristic latents of {d}")
            self._register_style_prior()
        if kind_directions:
            if latent_dim == L * d:
                raise ValueError(f"kind_directions needs style latents, but latent_dim={latent_dim} leaves none")
            self._register_kinds(int(kind_directions))

    def _register_kinds(self, K: int) -> None:
        L, S, device = self.num_labels, self.style_dim, self.label_prior.device
        self.register_buffer("kind_basis", torch.zeros(2, L, K, S, device=device))
        self.register_buffer("kind_loc", torch.zeros(2, L, K, device=device))
        self.register_buffer("kind_tril", torch.zeros(2, L, K, K, device=device))

    def _register_style_prior(self) -> None:
        S, device = self.style_dim, self.label_prior.device
        self.register_buffer("style_prior_loc", torch.zeros(S, device=device))
        self.register_buffer("style_prior_tril", torch.eye(S, device=device))

    # ---- sizes and names -------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return list(self.config["label_names"])

    @property
    def num_labels(self) -> int:
        return len(self.config["label_names"])

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    @property
    def characteristic_dim(self) -> int:
        """d, the size of each label's characteristic latent z_i."""
        return self.config["characteristic_dim"]

    @property
    def characteristic_size(self) -> int:
        """L d, the size of z_c: z[..., :characteristic_size]."""
        return self.num_labels * self.characteristic_dim

    @property
    def style_dim(self) -> int:
        return self.latent_dim - self.characteristic_size

    def block(self, label: str | int) -> slice:
        """Where label i's characteristic latent z_i sits in z: z[..., block(i)], d entries."""
        i, d = self.label_index(label), self.characteristic_dim
        return slice(i * d, (i + 1) * d)

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    @property
    def device(self) -> torch.device:
        return self.classifier_bias.device

    @property
    def exclusive(self) -> torch.Tensor:
        """(L, L) bool on the CPU, symmetric: True where labels i and j are exclusive (config exclusive_labels)."""
        return self._exclusive.clone()

    def label_index(self, name_or_index: str | int) -> int:
        """The index of a label given by name or index; a clear error otherwise."""
        if isinstance(name_or_index, str):
            if name_or_index not in self.config["label_names"]:
                raise ValueError(f"unknown label {name_or_index!r}; this model's labels are {self.label_names}")
            return self.config["label_names"].index(name_or_index)
        i = int(name_or_index)
        if not 0 <= i < self.num_labels:
            raise IndexError(f"label index {i} out of range for {self.num_labels} labels")
        return i

    # ---- the distributions -----------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z | x) for x (B, C, H, W) in [0, 1]: a DiagonalGaussian over (B, D)."""
        self._check_images(x)
        loc, scale = self.encoder(x)
        return DiagonalGaussian(loc, scale)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D) -> logits (B, C, H, W); the image mean is their sigmoid."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean of p(x | z): (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(upcast(self.decode_logits(z)))

    def classifier_logits(self, z_c: torch.Tensor) -> torch.Tensor:
        """logit q(y_i = 1 | z_i) = w_i . z_i + b_i for z_c (..., L d): (..., L)."""
        return self.sum_blocks(upcast(z_c) * self.classifier_weight) + self.classifier_bias

    def prior_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(z_c | y_c = v), each (2, L d): row v holds every p(z_i | y_i = v), block by block."""
        return self.prior_loc, F.softplus(self.prior_raw_scale) + 1e-4

    def sum_blocks(self, t: torch.Tensor) -> torch.Tensor:
        """Per-entry values of z_c (..., L d) summed over each label's block: (..., L)."""
        d = self.characteristic_dim
        return t if d == 1 else t.unflatten(-1, (self.num_labels, d)).sum(-1)

    def expand_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Per-label values (..., L) repeated over their blocks: (..., L d)."""
        d = self.characteristic_dim
        return y if d == 1 else y.repeat_interleave(d, -1)

    def conditional_prior(self, y: torch.Tensor) -> DiagonalGaussian:
        """p(z_c | y) for y (..., L) in {0, 1}: a DiagonalGaussian over (..., L d)."""
        loc, scale = self.prior_params()
        y = self.expand_labels(y.to(loc.dtype))
        return DiagonalGaussian(loc[0] + y * (loc[1] - loc[0]), scale[0] + y * (scale[1] - scale[0]))

    def sample_style(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of z_s from the sampling prior: N(0, I), or the fitted N(m, L L^T). (n, S)."""
        eps = torch.randn(n, self.style_dim, generator=generator, device=self.device)
        if not self.config["fitted_style_prior"]:
            return eps
        return self.style_prior_loc + eps @ self.style_prior_tril.T

    @torch.no_grad()
    def fit_style_prior(self, z_s: torch.Tensor, *, jitter: float = 1e-4) -> None:
        """Fit the sampling prior of z_s to samples of the aggregate posterior, z_s (N, S) with
        N > S: their mean and the Cholesky factor of their covariance + jitter * I. Sets
        config["fitted_style_prior"], so the fit is saved with the weights."""
        S = self.style_dim
        if S == 0:
            raise ValueError("this model has no style latents to fit a prior to (the characteristic latents fill latent_dim)")
        z_s = torch.as_tensor(z_s, dtype=torch.float32)
        if z_s.dim() != 2 or z_s.shape[1] != S:
            raise ValueError(f"z_s must have shape (N, {S}), got {tuple(z_s.shape)}")
        if z_s.shape[0] <= S:
            raise ValueError(f"fitting a {S}-dimensional covariance needs more than {S} samples, got {z_s.shape[0]}")
        if not torch.isfinite(z_s).all():
            raise ValueError("z_s holds NaN or inf")
        z_s = z_s.double()
        cov = torch.cov(z_s.T) + jitter * torch.eye(S, dtype=z_s.dtype, device=z_s.device)
        tril, info = torch.linalg.cholesky_ex(cov)
        if info.item():
            raise ValueError(f"the covariance of z_s is not positive definite (Cholesky failed at column {info.item()})")
        if not self.config["fitted_style_prior"]:
            self._register_style_prior()
            self.config["fitted_style_prior"] = True
        self.style_prior_loc.copy_(z_s.mean(0).float())
        self.style_prior_tril.copy_(tril.float())

    @property
    def kind_directions(self) -> int:
        """K, the most directions of z_s a label's kinds span on one side (0: none fitted)."""
        return self.config["kind_directions"]

    def sample_kinds(self, label: str | int, present: bool, n: int, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of label i's kind coordinates along kind_basis[present, i] from the Gaussian
        fitted to faces with (present=True) or without the label: (n, K), 0 along unused rows."""
        i, v, K = self.label_index(label), int(bool(present)), self.kind_directions
        eps = torch.randn(n, K, generator=generator, device=self.device)
        return self.kind_loc[v, i] + eps @ self.kind_tril[v, i].T

    @torch.no_grad()
    def fit_kinds(self, z_s: torch.Tensor, y: torch.Tensor, *, directions: int = 3, min_ratio: float = 2.0,
                  jitter: float = 1e-4) -> list[list[float]]:
        """Find, per label and side, the directions of z_s that hold its kinds, and fit their coordinates.

        z_s (N, S): samples of q(z_s | x) of labelled faces; y (N, L) their labels in {0, 1, -1 unknown}.
        For label i with more than S faces on each side and each side v: the generalised
        eigenvectors e of Sigma_v e = lambda Sigma_{1-v} e, Sigma_v = cov(z_s | y_i = v) + jitter I,
        i.e. the directions along which side v's faces vary lambda times as much as the other
        side's (v = 1: a hat's colour; v = 0 for No_Beard: a beard's). The (at most `directions`)
        with lambda >= min_ratio are orthonormalised into kind_basis[v, i], and side v's
        coordinates along them get a Gaussian (mean, Cholesky factor of the covariance + jitter I).
        Sets config["kind_directions"], so the fit is saved with the weights. Returns the kept
        ratios, per label and side: [[lambdas of side 0], [lambdas of side 1]]."""
        S, L = self.style_dim, self.num_labels
        if S == 0:
            raise ValueError("this model has no style latents for kinds to live in")
        if isinstance(directions, bool) or int(directions) != directions or directions < 1:
            raise ValueError(f"directions must be a whole number >= 1, got {directions!r}")
        if not min_ratio > 1:
            raise ValueError(f"min_ratio must exceed 1 (one side varying more than the other), got {min_ratio}")
        z_s, y = torch.as_tensor(z_s).double(), torch.as_tensor(y)
        if z_s.dim() != 2 or z_s.shape[1] != S:
            raise ValueError(f"z_s must have shape (N, {S}), got {tuple(z_s.shape)}")
        if y.shape != (len(z_s), L):
            raise ValueError(f"y must have shape ({len(z_s)}, {L}), got {tuple(y.shape)}")
        if not torch.isfinite(z_s).all():
            raise ValueError("z_s holds NaN or inf")
        K = int(directions)
        basis = torch.zeros(2, L, K, S, dtype=torch.float64)
        loc, tril = torch.zeros(2, L, K, dtype=torch.float64), torch.zeros(2, L, K, K, dtype=torch.float64)
        eye = torch.eye(S, dtype=torch.float64)
        ratios = []
        for i in range(L):
            sides = [z_s[(y[:, i] >= 0) & (y[:, i] <= 0.5)], z_s[y[:, i] > 0.5]]  # y_i = -1 (unknown): neither
            ratios.append([[], []])
            if min(len(t) for t in sides) <= S:
                continue
            covs = [torch.cov(t.T) + jitter * eye for t in sides]
            for v in (0, 1):
                e, U = torch.linalg.eigh(covs[1 - v])
                whiten = U @ torch.diag(e.rsqrt()) @ U.T  # Sigma_{1-v}^(-1/2)
                lam, V = torch.linalg.eigh(whiten @ covs[v] @ whiten)  # ascending
                keep = [j for j in range(S - 1, max(S - 1 - K, -1), -1) if lam[j] >= min_ratio]
                ratios[i][v] = [float(lam[j]) for j in keep]
                if not keep:
                    continue
                k = len(keep)
                q, _ = torch.linalg.qr(whiten @ V[:, keep])  # (S, k): the span of the generalised eigenvectors
                basis[v, i, :k] = q.T
                c = sides[v] @ q  # (n_v, k)
                loc[v, i, :k] = c.mean(0)
                tril[v, i, :k, :k] = torch.linalg.cholesky(torch.cov(c.T).reshape(k, k) + jitter * torch.eye(k, dtype=c.dtype))
        if self.kind_directions != K:
            for name in ("kind_basis", "kind_loc", "kind_tril"):
                self._buffers.pop(name, None)
            self._register_kinds(K)
            self.config["kind_directions"] = K
        self.kind_basis.copy_(basis.float())
        self.kind_loc.copy_(loc.float())
        self.kind_tril.copy_(tril.float())
        return ratios

    def likelihood_scale(self) -> torch.Tensor:
        return self.log_likelihood_scale.exp()

    def log_likelihood(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over pixels, for x (B, C, H, W) and the decoder's logits: (B,)."""
        return image_log_likelihood(x, logits, self.config["likelihood"], self.likelihood_scale())

    def set_label_prior(self, frequencies: torch.Tensor | Sequence[float]) -> None:
        """Set p(y_i = 1) from the labelled data's frequencies (clamped away from 0 and 1)."""
        f = torch.as_tensor(frequencies, dtype=torch.float32, device=self.label_prior.device)
        if f.shape != self.label_prior.shape:
            raise ValueError(f"label frequencies have shape {tuple(f.shape)}, expected ({self.num_labels},)")
        self.label_prior.copy_(f.clamp(1e-3, 1 - 1e-3))

    def _check_images(self, x: torch.Tensor) -> None:
        c, s = self.config["in_channels"], self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"expected images of shape (B, {c}, {s}, {s}), got {tuple(x.shape)}")

    # ---- checkpoints (Hugging Face Hub layout; strict) -------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        from . import hub

        hub.save(self, Path(save_directory))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, map_location: str | torch.device = "cpu",
                        revision: str | None = None, token: str | bool | None = None,
                        cache_dir: str | Path | None = None, local_files_only: bool = False,
                        force_download: bool = False) -> "CCVAE":
        """Load a model saved by `save_pretrained`, from a folder or a Hub id, strictly.

        Missing, extra or mis-shaped tensors, a damaged safetensors file, or a config with
        unknown, missing or invalid entries raise `hub.CheckpointError` naming the problem.
        """
        from . import hub

        return hub.load(cls, pretrained_model_name_or_path, map_location=map_location, revision=revision, token=token,
                        cache_dir=cache_dir, local_files_only=local_files_only, force_download=force_download)


def _softplus_inverse(y: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(y))))
