"""The encoder and decoder networks (the paper's CelebA architecture, Appendix C).

Encoder, for a 64x64 image: four 4x4 stride-2 convolutions (32, 32, 64, 128 channels) take
(B, 3, 64, 64) to (B, 128, 4, 4); a 4x4 convolution to 256 channels makes (B, 256, 1, 1); two
linear heads give the mean and the (softplus) scale of q(z|x). A 128x128 image gets one more
stride-2 convolution. The decoder mirrors it and ends in logits; the image mean is their sigmoid.
With gates = G > 0 the decoder also reads, for each of the first G latents (the characteristic
latents z_c), a learned soft step g_i = sigmoid(s_i (z_i - c_i)): a label's presence as one input it
can act on fully, however far z_i sits from the boundary (without it, the paper's decoder draws a
characteristic with a strength that grows with z_i, so the faces the encoder puts near the
boundary get faint earrings). With characteristic latents of d > 1 entries the gate reads a
learned direction of each block, g_i = sigmoid(s_i (v_i . z_i - c_i)), v_i (d,) starting at
(1, .., 1)/sqrt(d), where the classifier's w_i starts, and the rest of the block reaches the
decoder multiplied by the gate: z_i -> a_i + g_i (z_i - a_i), a_i the part of z_i along v_i. The free
directions of z_i then draw nothing on a face without label i, so they cannot hold what every face
has (background, pose: z_s holds it anyway, and a second copy only costs KL) and are left for what
comes with the label (which glasses, which hat).
With film = True every intermediate stage k of the decoder (the feature maps after each ReLU, widths
128, 64, 32, 32 at 4x4 .. 32x32) is also modulated channel-wise by the latents (FiLM, Perez et al.
2018): h_k <- h_k * (1 + gamma_k(z)) + beta_k(z), with gamma, beta one linear map of the decoder's
input (z and the gates) that starts at zero, so training starts from the paper's decoder. A
property of a small region (an earring's colour and kind) can then act at 32x32 directly instead of
being carried there from the 1x1 bottleneck through four transposed convolutions.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .distributions import upcast

MIN_SCALE = 1e-4


def default_channels(image_size: int) -> tuple[int, ...]:
    """(32, 32, 64, 128) for 64x64, one more 128 per doubling of the image size."""
    n = _num_downsamples(image_size)
    return (32, 32, 64, 128) + (128,) * (n - 4) if n >= 4 else (32, 32, 64, 128)[:n]


def _num_downsamples(image_size: int) -> int:
    n = math.log2(image_size / 4) if image_size >= 8 else -1
    if n != int(n) or n < 1:
        raise ValueError(f"image_size must be 4 * 2**n with n >= 1 (e.g. 64 or 128), got {image_size}")
    return int(n)


def _check_channels(image_size: int, channels: Sequence[int]) -> None:
    """One conv width per halving from image_size down to 4x4, each positive."""
    if len(channels) != _num_downsamples(image_size):
        raise ValueError(
            f"{image_size}x{image_size} images need {_num_downsamples(image_size)} conv channels, got {list(channels)}"
        )
    if min(channels) < 1:
        raise ValueError(f"conv channels must be positive widths, got {list(channels)}")


class Encoder(nn.Module):
    """x (B, C, H, W) in [0, 1] -> (loc, scale), each (B, latent_dim)."""

    def __init__(self, *, image_size: int, in_channels: int, channels: Sequence[int], hidden_dim: int, latent_dim: int):
        super().__init__()
        _check_channels(image_size, channels)
        layers, c_in = [], in_channels
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.ReLU(inplace=True)]
            c_in = c
        layers += [nn.Conv2d(c_in, hidden_dim, 4, 1, 0), nn.ReLU(inplace=True), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.loc = nn.Linear(hidden_dim, latent_dim)
        self.raw_scale = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)  # (B, hidden_dim)
        loc = upcast(self.loc(h))
        scale = F.softplus(upcast(self.raw_scale(h))) + MIN_SCALE
        return loc, scale


class Decoder(nn.Module):
    """z (B, latent_dim) -> logits (B, C, H, W); the image mean is sigmoid(logits).

    gates: 0 for the paper's decoder; G > 0 appends g = sigmoid(s * (z[:, :G] - c)), (B, G), to its
        input, with centres c (G,) starting at 0 (midway between the conditional prior's starting
        means) and slopes s = exp(log_s) (G,) starting at GATE_SLOPE.
    gate_dim: d, the size of each gated block: with d > 1 gate i reads v_i . z[:, i d:(i + 1) d]
        instead, v flat (G d,) (the parameter gate_direction, absent for d = 1), and the block's part
        across v_i is multiplied by g_i before the decoder reads it.
    film: False for the paper's decoder; True adds film (Linear(latent_dim + G, 2 * sum(channels))),
        whose output splits into gamma_k, beta_k (B, C_k) for the stage of width C_k, k = 0..n-1.
    """

    GATE_SLOPE = 4.0

    def __init__(self, *, image_size: int, out_channels: int, channels: Sequence[int], hidden_dim: int, latent_dim: int,
                 gates: int = 0, gate_dim: int = 1, film: bool = False):
        super().__init__()
        if not 0 <= gates * gate_dim <= latent_dim:
            raise ValueError(f"gates x gate_dim must be between 0 (none) and latent_dim={latent_dim}, got {gates} x {gate_dim}")
        _check_channels(image_size, channels)
        rev = list(channels)[::-1]  # e.g. 128, 64, 32, 32
        self.gates = int(gates)
        if gates:
            self.gate_center = nn.Parameter(torch.zeros(gates))
            self.gate_log_slope = nn.Parameter(torch.full((gates,), math.log(self.GATE_SLOPE)))
        self.gate_dim = int(gate_dim)
        if gates and gate_dim > 1:
            self.gate_direction = nn.Parameter(torch.full((gates * gate_dim,), gate_dim ** -0.5))
        self.project = nn.Sequential(nn.Linear(latent_dim + gates, hidden_dim), nn.ReLU(inplace=True))
        self.film_widths = rev if film else []  # C_k of the stages that are modulated
        if film:
            self.film = nn.Linear(latent_dim + gates, 2 * sum(rev))
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        layers = [nn.Unflatten(1, (hidden_dim, 1, 1)), nn.ConvTranspose2d(hidden_dim, rev[0], 4, 1, 0), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(rev, rev[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(rev[-1], out_channels, 4, 2, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.gates:
            C = self.gates * self.gate_dim
            if self.gate_dim > 1:
                blocks = z[:, :C].unflatten(1, (self.gates, self.gate_dim))  # (B, G, d)
                v = self.gate_direction.unflatten(0, (self.gates, self.gate_dim))  # (G, d)
                read = (blocks * v).sum(-1)  # (B, G): v_i . z_i
            else:
                read = z[:, :C]
            g = torch.sigmoid((read - self.gate_center) * self.gate_log_slope.exp())  # (B, G)
            if self.gate_dim > 1:  # the part of z_i across v_i reaches the decoder only where label i is on
                u = v / v.norm(dim=-1, keepdim=True)
                along = (blocks * u).sum(-1, keepdim=True) * u  # (B, G, d)
                blocks = along + g.unsqueeze(-1) * (blocks - along)
                z = torch.cat([blocks.flatten(1), z[:, C:]], 1)
            z = torch.cat([z, g], 1)
        h = self.project(z)
        if not self.film_widths:
            return self.body(h)
        # (B, 2 sum C_k) -> gamma_0, .., gamma_{n-1}, beta_0, .., beta_{n-1}, each (B, C_k, 1, 1)
        mod = self.film(z).to(h.dtype)[:, :, None, None].split(self.film_widths * 2, 1)
        n, k = len(self.film_widths), 0
        for layer in self.body:
            h = layer(h)
            if k < n and isinstance(layer, nn.ReLU):  # after each stage's ReLU
                h = h * (1 + mod[k]) + mod[n + k]
                k += 1
        return h
