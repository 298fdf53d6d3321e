"""Procedural cartoon faces with binary labels and their ground-truth characteristics.

Every sample is a pure function of ``(seed, split, index)``:

    factors = sample_factors(seed, split, index)   # labels (bool) + continuous factors (float)
    image   = render_face(factors, size=64)        # (size, size, 3) uint8

Faces are framed like CelebA's aligned crops: the face fills most of the square, the eyes sit
at ~47% of the height (before jitter), the collar shows at the bottom edge. Shapes are drawn at
``SUPERSAMPLE`` x the output size with PIL and box-reduced, so edges are anti-aliased.

Every label is decidable from the 64x64 image alone, by construction:

* the "on" and "off" ranges of each characteristic are separated by a gap (open vs narrow
  eyes, curved vs flat mouths, pale vs other skin tones);
* nothing occludes a label: Wearing_Hat, Bald and Bangs are never combined with each other
  in a way that hides one (a hat never goes with Bald, and sits above the bangs); hair
  colour always shows at the temples, bald heads included; glasses lenses are at most
  lightly tinted, so the eyes stay visible; earrings and the tie are drawn on top.

Beyond its binary value each label has characteristics that vary continuously (frame shape,
size, thickness, colour and tint of glasses; curvature and width of a smile; style, colour and
height of a hat; ...), and style factors (position, scale, rotation, face shape, skin tone,
background, lighting) vary independently of the labels.
"""
from __future__ import annotations

import colorsys
import math
import os

import numpy as np
from PIL import Image, ImageDraw

GENERATOR_VERSION = 3
SUPERSAMPLE = 2
SPLITS = {"train": 0, "val": 1, "test": 2}

LABEL_NAMES = [
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Male",
    "Mouth_Slightly_Open", "Narrow_Eyes", "No_Beard", "Pale_Skin", "Smiling",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Necktie",
]

# Ground-truth factors: the continuous characteristics of each label, then the style factors.
# Each is in [0, 1] unless noted; a characteristic whose label is off is still sampled (unused).
FACTOR_NAMES = [
    # characteristics
    "glasses_shape",      # 0 round .. 1 rectangular (superellipse exponent)
    "glasses_size",
    "glasses_thickness",
    "glasses_hue",
    "glasses_value",      # frame brightness (kept dark enough to read against skin)
    "glasses_tint",       # lens tint opacity
    "smile",              # mouth curvature in [-1, 1]: > 0.45 Smiling, < 0.15 not
    "mouth_width",
    "mouth_open",         # lip gap: 0 closed (label off), (0.45, 1] open
    "hat_style",          # 0 cap, 1 beanie, 2 fedora (integer-valued)
    "hat_hue",
    "hat_value",
    "hat_height",
    "bangs_length",
    "bangs_part",         # side parting position
    "hair_shade",         # lightness within the hair colour class
    "hair_hue",           # hue within the hair colour class
    "hair_class",         # 0 black, 1 brown, 2 blond, 3 red, 4 grey (integer-valued)
    "hair_length",        # long hair below the jaw (not Male) / volume of short hair (Male)
    "beard_length",
    "beard_shade",
    "eye_open",           # eye opening: narrow < 0.3 < gap < 0.5 < open
    "iris_hue",
    "brow_thickness",
    "earring_style",      # 0 stud, 1 hoop, 2 drop (integer-valued)
    "earring_size",
    "earring_hue",
    "tie_hue",
    "tie_width",
    "skin_tone",          # 0 dark .. 1 light; Pale_Skin faces use a separate pale band
    # style
    "pos_x", "pos_y",     # offset of the face centre, fraction of the image in [-1, 1] * JITTER
    "scale",
    "angle",              # degrees
    "face_width",
    "jaw",                # chin pointiness
    "bg_hue", "bg_sat", "bg_value", "bg_gradient", "bg_gradient_angle",
    "light_strength", "light_angle",
    "shirt_hue", "shirt_value",
]

# The label value a characteristic factor is drawn under, (label, value); on the other faces it is
# sampled but unused, so no model can know it there. Factors not named here show on every face
# (hair_class, hair_hue and hair_shade colour the brows and the beard of a bald face too).
FACTOR_SHOWN_WHEN = {
    **{k: ("Eyeglasses", 1) for k in FACTOR_NAMES if k.startswith("glasses_")},
    "mouth_open": ("Mouth_Slightly_Open", 1),
    **{k: ("Wearing_Hat", 1) for k in FACTOR_NAMES if k.startswith("hat_")},
    **{k: ("Bangs", 1) for k in FACTOR_NAMES if k.startswith("bangs_")},
    "hair_length": ("Bald", 0),
    **{k: ("No_Beard", 0) for k in FACTOR_NAMES if k.startswith("beard_")},
    **{k: ("Wearing_Earrings", 1) for k in FACTOR_NAMES if k.startswith("earring_")},
    **{k: ("Wearing_Necktie", 1) for k in FACTOR_NAMES if k.startswith("tie_")},
}
# Integer-valued factors whose values are kinds, not amounts (one-hot when regressed on).
CATEGORICAL_FACTORS = ("hat_style", "hair_class", "earring_style")
# Hues drawn around the whole colour circle, so 0 and 1 are the same colour ((cos, sin) when regressed on).
CIRCULAR_FACTORS = ("glasses_hue", "hat_hue", "bg_hue", "shirt_hue")

JITTER = 0.03
_ANGLE_MAX = 7.0
# Where the eyes sit (``ccvae.photos`` framing): the canvas maps canonical (x, y) to
# (0.5 + s x, 0.47 + s y) of the image side (_Canvas), with s = 1.12 (0.93 + 0.14 scale) and the
# eyes at (-+ex, -0.02), ex = 0.1 + 0.02 face_width (render_face). At the mean factors (scale =
# face_width = 0.5, no jitter, no turn): s = 1.12, ex = 0.11, so the eyes are at 0.5 -+ 0.1232 and
# 0.47 - 0.0224. The centroids of the eye whites of 174 test faces lie within 0.01 of these.
FRAMING = {
    "left_eye": [0.3768, 0.4476], "right_eye": [0.6232, 0.4476], "aspect": 1.0,
    "crop": "synthetic faces drawn into the square (eyes at 45% of the height, +-3% jitter, +-7 degrees)",
}
_N_UNIFORMS = 64
assert len(FACTOR_NAMES) <= _N_UNIFORMS - 16


def sample_factors(seed: int, split: str, index: int) -> dict:
    """Labels and factors of sample ``index`` of ``split`` under ``seed``, the same in any process.

    The random stream is ``numpy.random.default_rng([seed, split_id, index])``: independent of the
    order samples are drawn in, and disjoint between splits.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if index < 0 or seed < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    u = iter(np.random.default_rng([seed, SPLITS[split], index]).random(_N_UNIFORMS).tolist())

    def between(lo, hi):
        return lo + (hi - lo) * next(u)

    f: dict = {}
    # --- labels, with CelebA-like frequencies and a few correlations -------------------------
    male = next(u) < 0.45
    bald = next(u) < 0.11 and male                    # ~5%, men only
    hat = next(u) < 0.09 and not bald                 # never with Bald
    bangs = next(u) < (0.12 if male else 0.22) and not bald
    r = next(u)
    hair_class = 0 if r < 0.27 else 1 if r < 0.55 else 2 if r < (0.78 if not male else 0.66) else 3 if r < 0.9 else 4
    beard = next(u) < (0.35 if male else 0.02)
    earrings = next(u) < (0.05 if male else 0.38)
    necktie = next(u) < (0.14 if male else 0.02)
    glasses = next(u) < 0.09
    smiling = next(u) < 0.48
    mouth_open = next(u) < (0.62 if smiling else 0.3)
    narrow = next(u) < 0.11
    pale = next(u) < 0.07
    f.update({
        "Bald": bald, "Bangs": bangs, "Black_Hair": hair_class == 0, "Blond_Hair": hair_class == 2,
        "Brown_Hair": hair_class == 1, "Eyeglasses": glasses, "Male": male,
        "Mouth_Slightly_Open": mouth_open, "Narrow_Eyes": narrow, "No_Beard": not beard,
        "Pale_Skin": pale, "Smiling": smiling, "Wearing_Earrings": earrings, "Wearing_Hat": hat,
        "Wearing_Necktie": necktie,
    })
    # --- characteristics ----------------------------------------------------------------------
    f["glasses_shape"] = next(u)
    f["glasses_size"] = next(u)
    f["glasses_thickness"] = next(u)
    f["glasses_hue"] = next(u)
    f["glasses_value"] = next(u)
    f["glasses_tint"] = next(u)
    f["smile"] = between(0.5, 1.0) if smiling else between(-0.5, 0.1)
    f["mouth_width"] = next(u)
    f["mouth_open"] = between(0.5, 1.0) if mouth_open else 0.0
    f["hat_style"] = float(int(next(u) * 3))
    f["hat_hue"] = next(u)
    f["hat_value"] = next(u)
    f["hat_height"] = next(u)
    f["bangs_length"] = next(u)
    f["bangs_part"] = next(u)
    f["hair_shade"] = next(u)
    f["hair_hue"] = next(u)
    f["hair_class"] = float(hair_class)
    f["hair_length"] = next(u)
    f["beard_length"] = next(u)
    f["beard_shade"] = next(u)
    f["eye_open"] = between(0.0, 0.3) if narrow else between(0.5, 1.0)
    f["iris_hue"] = next(u)
    f["brow_thickness"] = next(u)
    f["earring_style"] = float(int(next(u) * 3))
    f["earring_size"] = next(u)
    f["earring_hue"] = next(u)
    f["tie_hue"] = next(u)
    f["tie_width"] = next(u)
    f["skin_tone"] = next(u)
    # --- style ----------------------------------------------------------------------------------
    f["pos_x"] = between(-1, 1)
    f["pos_y"] = between(-1, 1)
    f["scale"] = next(u)
    f["angle"] = between(-_ANGLE_MAX, _ANGLE_MAX)
    f["face_width"] = next(u)
    f["jaw"] = next(u)
    f["bg_hue"] = next(u)
    f["bg_sat"] = next(u)
    f["bg_value"] = next(u)
    f["bg_gradient"] = next(u)
    f["bg_gradient_angle"] = between(0, 2 * math.pi)
    f["light_strength"] = next(u)
    f["light_angle"] = between(0, 2 * math.pi)
    f["shirt_hue"] = next(u)
    f["shirt_value"] = next(u)
    return f


# ---------------------------------------------------------------------------------------------
# Rendering. Canonical coordinates: origin at the face centre, y down, unit = image side.

_T = np.linspace(0, 2 * np.pi, 33)[:-1]
_UPPER = np.linspace(math.pi, 2 * math.pi, 17)   # upper half-turn (y up is negative)
_LOWER = np.linspace(0.0, math.pi, 17)
_LID = np.linspace(math.pi, 2 * math.pi, 9)
_RING = np.linspace(0, 2 * math.pi, 17)
_MOUTH = np.linspace(-1.0, 1.0, 13)
_COS, _SIN = np.cos(_T), np.sin(_T)


def _cos_sin(t) -> list[tuple[float, float]]:
    """(cos t, sin t) pairs as Python floats, computed once by numpy (the shapes depend on its exact values)."""
    return list(zip(np.cos(t).tolist(), np.sin(t).tolist()))


# Per-point constants of the outlines, as Python floats: the shapes are built point by point in
# Python, which for a few dozen points costs less than numpy's per-call overhead.
_CIRCLE = _cos_sin(_T)
_JAW = (_SIN ** 2).tolist()                       # sin^2 of _T: how much the jaw narrows
_UPPER_CS = _cos_sin(_UPPER)
_LOWER_CSS = list(zip(np.cos(_LOWER).tolist(), np.sin(_LOWER).tolist(),
                      (np.sin(_LOWER) ** 2).tolist(), (np.sin(_LOWER) ** 4).tolist()))
_LID_CS = _cos_sin(_LID)
_RING_CS = _cos_sin(_RING)
_MOUTH_X = _MOUTH.tolist()
_HAIR = [  # (hue range, saturation, value range) per hair class
    ((0.05, 0.09), (0.30, 0.55), (0.05, 0.14)),   # black
    ((0.05, 0.09), (0.60, 0.80), (0.22, 0.36)),   # brown (darker than any skin)
    ((0.11, 0.15), (0.50, 0.70), (0.80, 0.97)),   # blond
    ((0.00, 0.03), (0.75, 0.90), (0.50, 0.70)),   # red (more saturated than any skin)
    ((0.0, 1.0), (0.00, 0.06), (0.55, 0.80)),     # grey
]


def _rgb(h, s, v) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def _mix(c1, c2, t) -> tuple[int, int, int]:
    (r1, g1, b1), (r2, g2, b2) = c1, c2
    return int(r1 + (r2 - r1) * t + 0.5), int(g1 + (g2 - g1) * t + 0.5), int(b1 + (b2 - b1) * t + 0.5)


def _skin(f) -> tuple[int, int, int]:
    t = f["skin_tone"]
    if f["Pale_Skin"]:
        return _mix((250, 226, 218), (255, 240, 236), t)
    return _mix((140, 94, 64), (232, 184, 150), t)  # dark .. light, never pale


class _Canvas:
    """PIL drawing in canonical coordinates under the face's similarity transform.

    Filled polygons, thin lines and the tinted lenses go straight to PIL's C primitives
    (``Image.core.draw``), the calls ``ImageDraw.polygon`` / ``ImageDraw.line`` make for these
    arguments, without their per-call Python layer. Outlines and lines wider than 4 pixels
    (round joints) go through ``ImageDraw``, whose method for them has changed between versions.
    """

    def __init__(self, f: dict, px: int):
        self.px = px
        s = px * 1.12 * (0.93 + 0.14 * f["scale"])
        a = math.radians(f["angle"])
        self.m = (s * math.cos(a), -s * math.sin(a), s * math.sin(a), s * math.cos(a))   # row-major 2x2
        self.o = (px * (0.5 + JITTER * f["pos_x"]), px * (0.47 + JITTER * f["pos_y"]))
        self.unit = s
        self.image = _background(f, px)
        self.draw = Image.core.draw(self.image.im, 0)
        self._blend = None       # RGBA-blending draw, for the tinted lenses
        self._image_draw = None  # ImageDraw, for outlines and wide lines

    def pts(self, xy) -> list[float]:
        """(N, 2) canonical points (array or list of pairs) -> flat pixel list [x0, y0, x1, y1, ...]."""
        a, b, c, d = self.m
        ox, oy = self.o
        if isinstance(xy, np.ndarray):
            xy = xy.tolist()
        out = []
        for x, y in xy:
            out += (a * x + b * y + ox, c * x + d * y + oy)
        return out

    def _pil(self) -> ImageDraw.ImageDraw:
        if self._image_draw is None:
            self._image_draw = ImageDraw.Draw(self.image)
        return self._image_draw

    def poly(self, xy, fill, outline=None):
        if outline is None:
            self.draw.draw_polygon(self.pts(xy), self.draw.draw_ink(fill), 1)
        else:
            self._pil().polygon(self.pts(xy), fill=fill, outline=outline, width=SUPERSAMPLE)

    def tint(self, xy, fill):
        """A polygon blended over the image with the alpha of ``fill`` (r, g, b, a)."""
        if self._blend is None:
            self._blend = Image.core.draw(self.image.im, 1)
        self._blend.draw_polygon(self.pts(xy), self._blend.draw_ink(fill), 1)

    def ellipse(self, cx, cy, rx, ry, fill, outline=None):
        a, b, c, d = self.m
        ox, oy = self.o
        xy = []
        for u, v in _CIRCLE:   # self.pts of the points (cx + rx u, cy + ry v), without the list of pairs
            x, y = cx + rx * u, cy + ry * v
            xy += (a * x + b * y + ox, c * x + d * y + oy)
        if outline is None:
            self.draw.draw_polygon(xy, self.draw.draw_ink(fill), 1)
        else:
            self._pil().polygon(xy, fill=fill, outline=outline, width=SUPERSAMPLE)

    def line(self, xy, fill, width):
        width = max(1, int(round(width * self.unit)))
        if width > 4:   # ImageDraw.line(joint="curve") adds round joints from this width on
            self._pil().line(self.pts(xy), fill=fill, width=width, joint="curve")
        else:
            self.draw.draw_lines(self.pts(xy), self.draw.draw_ink(fill), width)


def _background(f, px) -> Image.Image:
    # Two-colour linear gradient, (px, px, 3), built separably: colour(x, y) = base + gx x + gy y.
    c1 = np.array(_rgb(f["bg_hue"], 0.15 + 0.5 * f["bg_sat"], 0.35 + 0.6 * f["bg_value"]), np.float32)
    c2 = np.array(_rgb(f["bg_hue"] + 0.08, 0.15 + 0.5 * f["bg_sat"], 0.2 + 0.5 * f["bg_value"]), np.float32)
    # Computed at the output resolution and repeated SUPERSAMPLE x: the blocks are exactly the
    # output pixels after the box reduce, so nothing is lost.
    n = px // SUPERSAMPLE
    x, y = _ramp(n, f["bg_gradient_angle"])                    # (1, n), (n, 1) summing to [-1, 1]
    half = ((c2 - c1) * (0.5 * f["bg_gradient"]))[:, None]      # (3, 1)
    # Laid out (rows, channel, columns), PIL's line-interleaved "RGB;L": numpy adds along
    # contiguous rows of n instead of pixel by pixel.
    img = ((c1 + 0.5 * (c2 - c1))[:, None] + x * half) + y[:, :, None] * half   # (n, 3, n)
    return Image.frombuffer("RGB", (n, n), img.astype(np.uint8), "raw", "RGB;L", 0, 1).resize((px, px), Image.NEAREST)


_COORDS: dict = {}


def _ramp(px: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """A linear ramp in [-1, 1] along ``angle`` as two separable parts, (1, px) + (px, 1)."""
    if px not in _COORDS:
        _COORDS[px] = ((np.arange(px, dtype=np.float32) + 0.5) / px * 2 - 1) * np.float32(1 / math.sqrt(2))
    c = _COORDS[px]
    return (c * np.float32(math.cos(angle)))[None, :], (c * np.float32(math.sin(angle)))[:, None]


def render_face(factors: dict, size: int = 64) -> np.ndarray:
    """The face described by ``factors`` (from :func:`sample_factors`) as (size, size, 3) uint8."""
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    f = factors
    c = _Canvas(f, size * SUPERSAMPLE)
    skin = _skin(f)
    shade = _mix(skin, (60, 30, 20), 0.18)
    h_lo, h_hi = _HAIR[int(f["hair_class"])][0]
    s_lo, s_hi = _HAIR[int(f["hair_class"])][1]
    v_lo, v_hi = _HAIR[int(f["hair_class"])][2]
    hair = _rgb(h_lo + (h_hi - h_lo) * f["hair_hue"], s_lo + (s_hi - s_lo) * f["hair_hue"],
                v_lo + (v_hi - v_lo) * f["hair_shade"])
    edge = _mix(hair, (0, 0, 0), 0.35)
    male = f["Male"]
    fw = 0.235 + 0.04 * f["face_width"]   # face half-width
    fh = 0.31                              # face half-height
    eye_y, brow_y, mouth_y = -0.02, -0.085, 0.165

    # Shirt and neck (bottom edge). Without a tie: a skin V-neck; with a tie: collar + tie.
    shirt = _rgb(f["shirt_hue"], 0.35, 0.3 + 0.55 * f["shirt_value"])
    c.poly([(-0.62, 0.62), (-0.55, 0.42), (-0.2, 0.33), (0.2, 0.33), (0.55, 0.42), (0.62, 0.62)], shirt)
    c.poly([(-0.085, 0.15), (0.085, 0.15), (0.085, 0.36), (-0.085, 0.36)], shade)
    if f["Wearing_Necktie"]:
        tie = _rgb(f["shirt_hue"] + 0.35 + 0.3 * f["tie_hue"], 0.75, 0.45 + 0.35 * f["tie_width"])
        c.poly([(-0.11, 0.33), (0.0, 0.36), (-0.02, 0.41), (-0.13, 0.37)], (245, 245, 245))
        c.poly([(0.11, 0.33), (0.0, 0.36), (0.02, 0.41), (0.13, 0.37)], (245, 245, 245))
        w = 0.04 + 0.02 * f["tie_width"]
        c.poly([(-0.035, 0.335), (0.035, 0.335), (0.025, 0.38), (-0.025, 0.38)], tie)
        c.poly([(-0.025, 0.375), (0.025, 0.375), (w, 0.56), (0.0, 0.6), (-w, 0.56)], tie)
    else:
        c.poly([(-0.085, 0.33), (0.085, 0.33), (0.0, 0.43)], shade)

    # Long hair behind the head (not Male).
    top = -fh - 0.03
    if not male and not f["Bald"]:
        bottom = 0.12 + 0.2 * f["hair_length"]
        c.poly([(-fw - 0.06, bottom), (-fw - 0.07, -0.05), (-fw * 0.8, top + 0.02), (0.0, top - 0.02),
                (fw * 0.8, top + 0.02), (fw + 0.07, -0.05), (fw + 0.06, bottom)], hair, edge)

    # Ears, face.
    for sx in (-1, 1):
        c.ellipse(sx * (fw + 0.005), eye_y + 0.03, 0.04, 0.06, shade)
    jaw = 0.15 + 0.2 * f["jaw"]
    c.poly([(fw * u * (1 - jaw * s2 if v > 0 else 1.0), fh * v) for (u, v), s2 in zip(_CIRCLE, _JAW)], skin)

    # Hair: a cap over the skull down to the hairline, and the temples (always visible).
    if not f["Bald"]:
        vol = 0.01 + (0.03 * f["hair_length"] if male else 0.03)
        arc = [((fw + vol) * u, -0.05 + (fh - 0.05 + vol) * v) for u, v in _UPPER_CS]
        hairline = [(fw * 0.9, -0.08), (fw * 0.6, -0.17), (0.0, -0.195), (-fw * 0.6, -0.17), (-fw * 0.9, -0.08)]
        c.poly([(-fw - vol, 0.0), *arc, (fw + vol, 0.0), *hairline], hair, edge)
    for sx in (-1, 1):  # temples / sideburns
        c.poly([(sx * (fw + 0.012), -0.14), (sx * (fw * 0.8), -0.12), (sx * (fw * 0.86), 0.02),
                (sx * (fw + 0.012), 0.03)], hair)
    if f["Bald"]:
        c.ellipse(-fw * 0.3, -fh * 0.75, 0.05, 0.025, _mix(skin, (255, 255, 255), 0.35))  # shine

    # Bangs: a fringe over the forehead down to just above the brows.
    if f["Bangs"]:
        length = 0.125 - 0.02 * f["bangs_length"]   # lower edge at y = -length (brows at -0.085)
        part = (f["bangs_part"] - 0.5) * fw
        c.poly([(-fw * 0.95, -0.05), (-fw * 0.92, -0.2), (part, -0.26), (fw * 0.92, -0.2), (fw * 0.95, -0.05),
                (fw * 0.7, -length + 0.01), (fw * 0.35, -length - 0.005), (part, -length + 0.005),
                (-fw * 0.35, -length - 0.005), (-fw * 0.7, -length + 0.01)], hair, edge)

    # Hat: sits on the skull above the hairline, bangs and temples stay visible.
    if f["Wearing_Hat"]:
        hat = _rgb(f["hat_hue"], 0.65, 0.25 + 0.6 * f["hat_value"])
        band = _mix(hat, (0, 0, 0), 0.35)
        rim = -0.2 - (0.02 if f["Bangs"] else 0.0)
        height = 0.12 + 0.08 * f["hat_height"]
        style = int(f["hat_style"])
        if style == 0:  # baseball cap: dome and a peak to one side
            c.poly([((fw + 0.02) * u, rim + (height + 0.02) * v) for u, v in _UPPER_CS], hat)
            c.poly([(-fw - 0.02, rim - 0.015), (fw + 0.14, rim - 0.005), (fw + 0.14, rim + 0.025), (-fw - 0.02, rim + 0.02)], band)
        elif style == 1:  # beanie: dome, thick turned-up band, bobble
            c.poly([((fw + 0.03) * u, rim + (height + 0.04) * v) for u, v in _UPPER_CS], hat)
            c.poly([(-fw - 0.035, rim - 0.05), (fw + 0.035, rim - 0.05), (fw + 0.035, rim + 0.015), (-fw - 0.035, rim + 0.015)], band)
            c.ellipse(0.0, rim - height - 0.05, 0.035, 0.035, band)
        else:  # fedora: tapered crown and a wide brim
            c.poly([(-fw * 0.8, rim - 0.01), (-fw * 0.65, rim - height - 0.04), (fw * 0.65, rim - height - 0.04),
                    (fw * 0.8, rim - 0.01)], hat)
            c.poly([(-fw * 0.8, rim - 0.05), (fw * 0.8, rim - 0.05), (fw * 0.8, rim - 0.015), (-fw * 0.8, rim - 0.015)], band)
            c.ellipse(0.0, rim, fw + 0.12, 0.03, hat)

    # Beard: jaw and chin, longer below the chin; the mouth is drawn over it.
    if not f["No_Beard"]:
        beard = _mix(hair, (0, 0, 0) if f["beard_shade"] < 0.5 else (255, 255, 255), 0.3 * abs(f["beard_shade"] - 0.5))
        below = 0.01 + 0.06 * f["beard_length"]
        outer = [(fw * u * (1 - jaw * v2) * 1.02, fh * v + below * v4) for u, v, v2, v4 in _LOWER_CSS]
        inner = [(-fw * 0.9, 0.02), (-0.08, 0.11), (0.0, 0.12), (0.08, 0.11), (fw * 0.9, 0.02)]
        c.poly([inner[-1], *outer, *inner], beard, _mix(beard, (0, 0, 0), 0.35))

    # Nose.
    c.poly([(0.0, 0.0), (0.025, 0.09), (-0.025, 0.09)], shade)

    # Eyes: whites, iris, upper lid; narrow eyes are slits.
    ex = 0.1 + 0.02 * f["face_width"]
    ry = 0.006 + 0.014 * f["eye_open"] if f["Narrow_Eyes"] else 0.024 + 0.012 * f["eye_open"]
    iris = _rgb(0.05 + 0.6 * f["iris_hue"], 0.6, 0.3)
    for sx in (-1, 1):
        c.ellipse(sx * ex, eye_y, 0.05, ry, (250, 250, 250))
        c.ellipse(sx * ex, eye_y, 0.022, min(ry, 0.022), iris)
        c.line([(sx * ex + 0.052 * u, eye_y + ry * v) for u, v in _LID_CS], (40, 25, 20), 0.012)
        # Brows: thicker for men.
        bt = (0.014 + 0.01 * f["brow_thickness"]) * (1.35 if male else 1.0)
        c.line([(sx * (ex - 0.045), brow_y + 0.008), (sx * ex, brow_y - 0.006), (sx * (ex + 0.05), brow_y + 0.006)],
               _mix(hair, (0, 0, 0), 0.35), bt)

    # Mouth: corners at (+-w, mouth_y); curvature lifts the corners (Smiling), a gap opens it.
    w = 0.06 + 0.035 * f["mouth_width"] + (0.015 if f["Smiling"] else 0.0)
    curve = 0.08 * f["smile"]
    x = [w * m for m in _MOUTH_X]
    bow = [1 - q * q for q in (xi / w for xi in x)]   # 0 at the corners, 1 in the middle
    upper = [(xi, mouth_y + curve * b * 0.6) for xi, b in zip(x, bow)]
    lips = _mix(skin, (120, 20, 30), 0.7)
    if f["Mouth_Slightly_Open"]:
        gap = 0.018 + 0.03 * f["mouth_open"]
        lift = max(curve, 0)
        bow_07 = (np.array(bow) ** 0.7).tolist()   # numpy's power, as the faces were first drawn with
        lower = [(xi, mouth_y + curve * b * 0.6 + gap * b7 + lift * b * 0.4) for xi, b, b7 in zip(x, bow, bow_07)]
        c.poly(upper + lower[::-1], (70, 15, 20))
        teeth = [(xi * 0.8, mouth_y + curve * b * 0.6 + 0.012 * b) for xi, b in zip(x, bow)]
        c.poly([(xi * 0.8, y) for xi, y in upper] + teeth[::-1], (245, 240, 235))
        c.line(upper, lips, 0.013)
        c.line(lower, lips, 0.015)
    else:
        c.line(upper, lips, 0.024)

    # Glasses: superellipse frames around the eyes, a bridge, arms to the ears, tinted lenses.
    if f["Eyeglasses"]:
        p = 2 + 4 * f["glasses_shape"]            # 2 round .. 6 nearly rectangular
        gx = 0.055 + 0.02 * f["glasses_size"]
        gy = 0.04 + 0.015 * f["glasses_size"]
        cs, sn = np.sign(_COS) * np.abs(_COS) ** (2 / p), np.sign(_SIN) * np.abs(_SIN) ** (2 / p)
        frame = _rgb(f["glasses_hue"], 0.7 * (f["glasses_hue"] > 0.3), 0.08 + 0.42 * f["glasses_value"])
        thick = 0.018 + 0.014 * f["glasses_thickness"]
        tint = int(25 + 70 * f["glasses_tint"])
        for sx in (-1, 1):
            ring = np.stack([sx * ex + gx * cs, eye_y + gy * sn], 1)
            c.tint(ring, (*_rgb(f["glasses_hue"] + 0.5, 0.5, 0.35), tint))
            c.line(np.concatenate([ring, ring[:1]]), frame, thick)
            c.line([(sx * (ex + gx), eye_y - gy * 0.5), (sx * (fw + 0.01), eye_y - 0.01)], frame, thick * 0.8)
        c.line([(-ex + gx, eye_y - 0.005), (0.0, eye_y - 0.015), (ex - gx, eye_y - 0.005)], frame, thick)

    # Earrings hang from the lobes, drawn over the hair.
    if f["Wearing_Earrings"]:
        metal = _rgb(0.12, 0.7, 0.9) if f["earring_hue"] < 0.4 else (
            (215, 215, 225) if f["earring_hue"] < 0.7 else _rgb(f["earring_hue"] * 3, 0.8, 0.85))
        r = 0.026 + 0.012 * f["earring_size"]
        style = int(f["earring_style"])
        dark = (35, 25, 20)  # a dark rim keeps gold on blond hair and silver on grey hair visible
        for sx in (-1, 1):
            x0, y0 = sx * (fw + 0.005), eye_y + 0.095
            if style == 0:
                c.ellipse(x0, y0 + r * 0.5, r, r, metal, dark)
            elif style == 1:
                hoop = [(x0 + r * 1.1 * u, y0 + r * 1.3 + r * 1.3 * v) for u, v in _RING_CS]
                c.line(hoop, dark, 0.026)
                c.line(hoop, metal, 0.014)
            else:
                c.line([(x0, y0 - 0.005), (x0, y0 + r * 1.6)], dark, 0.014)
                c.ellipse(x0, y0 + r * 2.2, r * 0.9, r * 1.1, metal, dark)

    # Lighting: a smooth directional gradient over the whole picture, then the box downsample.
    # (Lighting is smooth, so it commutes with the downsample and is applied after it.)
    small = np.frombuffer(c.image.reduce(SUPERSAMPLE).tobytes(), np.uint8).reshape(size, size, 3)
    x, y = _ramp(size, f["light_angle"])
    k = np.float32(0.18 * f["light_strength"])
    lit = small * (1.0 + k * x + k * y)[..., None]     # float32; (S, S, 1) light in [1 - k, 1 + k]
    out = np.empty((size, size, 3), np.uint8)
    np.minimum(lit, 255.0, out=out, casting="unsafe")   # clip, then truncate to uint8
    return out


def factor_vector(factors: dict) -> np.ndarray:
    """The float factors of one sample in FACTOR_NAMES order, (F,) float32."""
    return np.array([factors[k] for k in FACTOR_NAMES], dtype=np.float32)


def label_vector(factors: dict, label_names=LABEL_NAMES) -> np.ndarray:
    """The labels of one sample in ``label_names`` order, (L,) int8 of 0/1."""
    return np.array([int(bool(factors[k])) for k in label_names], dtype=np.int8)


def render_range(seed: int, split: str, start: int, stop: int, size: int = 64):
    """Render samples [start, stop): images (N, S, S, 3) uint8, labels (N, L) int8, factors (N, F) float32."""
    n = stop - start
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n, len(LABEL_NAMES)), np.int8)
    factors = np.empty((n, len(FACTOR_NAMES)), np.float32)
    for k, i in enumerate(range(start, stop)):
        f = sample_factors(seed, split, i)
        images[k] = render_face(f, size)
        labels[k] = label_vector(f)
        factors[k] = factor_vector(f)
    return images, labels, factors


# ---------------------------------------------------------------------------------------------
# The dataset: a split rendered once into the cache, in parallel workers.

SPLIT_SIZES = {"train": 50_000, "val": 5_000, "test": 5_000}
_CHUNK = 500


def _render_chunk(job) -> None:
    path, seed, split, start, stop, offset, size = job
    images = np.load(path, mmap_mode="r+")
    images[start - offset:stop - offset] = render_range(seed, split, start, stop, size)[0]
    images.flush()


def load_synthetic(split: str = "train", *, image_size: int = 64, seed: int = 0, limit: int | None = None,
                   cache_dir=None, progress: bool = True, workers: int | None = None):
    """Synthetic faces of ``split`` (the first ``limit`` of SPLIT_SIZES[split]) as an ImageSet."""
    from . import cache
    from .imageset import ImageSet

    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLIT_SIZES)}")
    if image_size not in (32, 64, 128, 256):
        raise ValueError(f"image_size must be 32, 64, 128 or 256 for synthetic faces, got {image_size}")
    n = SPLIT_SIZES[split] if limit is None else int(limit)
    if n < 0:
        raise ValueError(f"limit must be non-negative, got {limit}")
    spec = {"dataset": "synthetic", "split": split, "seed": seed, "size": image_size, "n": n,
            "version": GENERATOR_VERSION, "supersample": SUPERSAMPLE}
    path = cache.entry_path(cache_dir, "synthetic", split, spec)
    if not cache.is_complete(path):
        tmp = cache.begin(path)
        try:
            cache.new_images(tmp, n, image_size).flush()
            jobs = [(tmp / "images.npy", seed, split, a, min(a + _CHUNK, n), 0, image_size) for a in range(0, n, _CHUNK)]
            workers = min(os.cpu_count() or 1, len(jobs)) if workers is None else max(1, min(workers, len(jobs)))
            bar = _bar(progress, n, f"rendering synthetic {split} ({n} faces, {workers} workers)")
            if workers <= 1:
                for job in jobs:
                    _render_chunk(job)
                    bar.update(job[4] - job[3])
            else:
                import multiprocessing as mp
                with mp.get_context("spawn").Pool(workers) as pool:
                    for job, _ in zip(jobs, pool.imap(_render_chunk, jobs)):
                        bar.update(job[4] - job[3])
            bar.close()
            fs = [sample_factors(seed, split, i) for i in range(n)]
            labels = np.stack([label_vector(f) for f in fs]) if n else np.zeros((0, len(LABEL_NAMES)), np.int8)
            factors = np.stack([factor_vector(f) for f in fs]) if n else np.zeros((0, len(FACTOR_NAMES)), np.float32)
            cache.commit(tmp, path, labels=labels, factors=factors,
                         meta={**spec, "label_names": LABEL_NAMES, "factor_names": FACTOR_NAMES})
        except BaseException:
            cache.abort(tmp)
            raise
    images, labels, factors, meta = cache.open_entry(path)
    return ImageSet(images, labels, meta["label_names"],
                    {k: factors[:, j] for j, k in enumerate(meta["factor_names"])}, name=f"synthetic/{split}")


def _bar(progress: bool, total: int, desc: str):
    if progress:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="img", leave=False)

    class _Null:
        def update(self, k): pass
        def close(self): pass
    return _Null()
