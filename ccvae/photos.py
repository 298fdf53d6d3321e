"""A person's photo -> what the model sees: find the face, put its eyes where the training
images have them, and say how far the result is from the faces the model was trained on.

Framing. A model trained on aligned crops (CelebA's, the synthetic faces) has its eyes at fixed
places; a photo framed differently (a whole portrait, a selfie) is outside what it learned. The
model's config holds its dataset's ``framing``::

    {"left_eye": [x, y], "right_eye": [x, y], "aspect": a, "crop": "how the crop was made"}

Eye centres are in [0, 1] coordinates of the model's square input: x to the right, y down, (0, 0)
the top-left corner and (1, 1) the bottom-right corner of the image (not of a pixel centre).
``left_eye`` is the eye on the image's left (the person's right eye). ``aspect`` is the vertical
over the horizontal scale from the dataset's source images to the model's input: 1 when squares
were cut and resized, 178/218 for CelebA's 178 x 218 aligned images resized whole to a square
(faces squeezed vertically). ``crop`` says in words how the dataset's crops were made.

Alignment (:func:`align`). With eye centres p_l, p_r found in the photo and targets q_l, q_r from
the framing, the crop is the similarity transform (rotation, uniform scale, translation) T with
T(p_l) = q'_l and T(p_r) = q'_r in the undistorted frame q' = (x, y / aspect), followed by the
squeeze y = aspect * y'. The photo is resampled once through that map: at 4x the output size
with bilinear interpolation (from a copy shrunk with pixel-area averaging when the face is large,
so nothing aliases), then area-averaged down to ``size``. Where the crop reaches past the photo's
edge, the edge pixels are repeated outwards (a face near the edge is padded, never refused).

Detector. OpenCV's Viola-Jones Haar cascades, from the ``opencv-python-headless`` 4.x wheels,
which ship the trained cascades as XML files in ``cv2.data.haarcascades``: nothing downloads at
run time, it runs on the CPU in a few milliseconds, and it does not touch torch. The alternatives
were worse fits: facenet-pytorch ships MTCNN weights (better landmarks) but pins torch < 2.3,
older than the torch this project pins; mediapipe 1.2 and the OpenCV 5.x wheels ship no face
models (they are fetched at run time). Steps, on a grayscale copy:

1. faces: ``haarcascade_frontalface_default`` on a copy whose longer side is ``DETECT_SIDE``
   pixels (it finds faces down to ~7 % of the photo's longer side); when none is
   found upright, the copy is searched again turned by -/+ ``RETRY_ANGLE`` degrees (the cascade
   is trained on upright faces and misses tilted heads), then upright at twice the resolution
   (faces down to ~3 % of the longer side); several faces: the largest;
2. eyes: ``haarcascade_eye`` on the upper half of that face, resampled upright at
   ``EYE_ROI`` pixels wide; the candidate nearest where an eye sits in the face box, on each
   side; a pair whose distance or tilt no face has is refused;
3. no eye pair: the eyes are placed where they sit in an average face box of this cascade
   (``BOX_EYES``), and the note says the alignment is approximate;
4. no face: the largest centred square, as for any image, and the note says so.

Out of domain (:func:`check_domain`). A VAE reconstructs what resembles its training images and
fails on the rest, so the reconstruction error e(x) = mean over pixels and channels of
(x - decode(mode q(z | x)))^2 measures how far a photo is from them. At the end of training
:func:`fit_reconstruction_error` stores quantiles of e on held-out images in the model's config
(``reconstruction_error``); an upload above the stored 99th percentile gets a notice.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .images import center_crop_resize, open_image, to_rgb

if TYPE_CHECKING:
    from .images import ImageSource

DETECT_SIDE = 320        # longer side of the copy the face detector searches first (pixels)
SCALE_STEP = 1.2         # ratio between the face sizes the detector tries
MIN_DETECT_SIDE = 160    # smaller photos are enlarged to this before searching
MIN_FACE = 24            # smallest face the detector reports, pixels of the searched copy (its window)
SURE_FRACTION = 0.5      # faces scored below this fraction of the best one are not counted
SURE_SCORE = 3.0         # a face whose eyes are not found is used only above this score (the
                         # last stage's sum; real faces score ~3-7, a helmet ring ~1.4)
RETRY_ANGLE = 20.0       # degrees; the second and third searches turn the photo by -/+ this
EYE_ROI = 120            # width of the upright face strip searched for eyes (pixels)
BOX_EYES = ((0.30, 0.38), (0.70, 0.38))  # eye centres in a frontalface_default box (fractions of its side)
SUPERSAMPLE = 4          # the crop is resampled at this many times `size`, then area-averaged
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
MIN_HELD_OUT = 100       # a 99th percentile needs at least this many images
FRAMING_KEYS = ("left_eye", "right_eye", "aspect", "crop")
CHECKPOINT_HINT = ("To edit photos of people, load a model trained on aligned photos such as CelebA: "
                   "`python app.py --checkpoint FOLDER_OR_HUB_ID`, or set CCVAE_CHECKPOINT.")


# ---- framing ------------------------------------------------------------------------------------
def check_framing(framing: Mapping) -> dict:
    """A validated copy of a framing dict (see the module docstring); ValueError naming the bad entry."""
    if not isinstance(framing, Mapping):
        raise ValueError(f"framing must be a dict with keys {list(FRAMING_KEYS)}, got {type(framing).__name__}")
    unknown = sorted(set(framing) - set(FRAMING_KEYS))
    missing = [k for k in ("left_eye", "right_eye", "crop") if k not in framing]
    if unknown or missing:
        raise ValueError(f"framing has unknown keys {unknown} and lacks {missing}; expected {list(FRAMING_KEYS)} "
                         f"('aspect' may be left out: 1.0)")
    out = {}
    for key in ("left_eye", "right_eye"):
        value = framing[key]
        try:
            x, y = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"framing[{key!r}] must be [x, y], got {value!r}") from None
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise ValueError(f"framing[{key!r}] = {value!r} lies outside the image; x and y must be in [0, 1]")
        out[key] = [x, y]
    if not out["left_eye"][0] < out["right_eye"][0]:
        raise ValueError(f"framing: left_eye {out['left_eye']} must lie left of right_eye {out['right_eye']} "
                         f"(left_eye is the eye on the image's left)")
    try:
        aspect = float(framing.get("aspect", 1.0))
    except (TypeError, ValueError):
        raise ValueError(f"framing['aspect'] must be a number, got {framing.get('aspect')!r}") from None
    if not 0.25 <= aspect <= 4.0:
        raise ValueError(f"framing['aspect'] = {aspect} is not a plausible vertical/horizontal scale; expected 0.25 .. 4")
    out["aspect"] = aspect
    crop = framing["crop"]
    if not isinstance(crop, str) or not crop.strip():
        raise ValueError(f"framing['crop'] must say how the dataset's crops were made, got {crop!r}")
    out["crop"] = crop.strip()
    return out


# ---- detection ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Eyes:
    """Eye centres found in a photo, in its pixel coordinates (x right, y down, the image spans
    [0, width] x [0, height]): ``left`` is the eye on the image's left."""
    left: tuple[float, float]
    right: tuple[float, float]
    face: tuple[tuple[float, float], ...]  # the face box's four corners in the photo (tilted if found turned)
    from_cascade: bool                     # False: placed from the face box (BOX_EYES)
    faces: int                             # how many faces were found


_CASCADES: dict[str, object] = {}


def _cascade(name: str):
    """A Haar cascade shipped in cv2.data, loaded on first use (nothing happens at import)."""
    import cv2

    if name not in _CASCADES:
        path = cv2.data.haarcascades + name
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"OpenCV could not load its cascade {path}; reinstall opencv-python-headless")
        _CASCADES[name] = cascade
    return _CASCADES[name]


def find_eyes(image: Image.Image) -> Eyes | None:
    """The eyes of the largest frontal face in ``image`` (any mode), or None when no face is found."""
    import cv2

    gray = np.asarray((image if image.mode in ("RGB", "L") else to_rgb(image)).convert("L"))
    height, width = gray.shape
    long_side = max(width, height)
    face_cascade = _cascade("haarcascade_frontalface_default.xml")
    # (turn, side): upright first; then turned both ways; then upright at twice the resolution,
    # for faces under MIN_FACE pixels in the first copy (in photos large enough to hold them)
    searches = [(0.0, DETECT_SIDE), (-RETRY_ANGLE, DETECT_SIDE), (RETRY_ANGLE, DETECT_SIDE)]
    if long_side > 1.5 * DETECT_SIDE:
        searches.append((0.0, 2 * DETECT_SIDE))
    copies: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for angle, side in searches:
        if side not in copies:
            scale = min(side / long_side, max(1.0, MIN_DETECT_SIDE / long_side))
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            copies[side] = small, _scaling(size[0] / width, size[1] / height)  # photo -> copy pixels
        small, to_small = copies[side]
        sh, sw = small.shape
        if min(sh, sw) < MIN_FACE:
            return None
        # the copy turned by `angle` degrees (counter-clockwise on screen) about its centre
        turn = cv2.getRotationMatrix2D((sw / 2, sh / 2), angle, 1.0)
        turned = small if not angle else cv2.warpAffine(small, _to_cv(turn), (sw, sh), flags=cv2.INTER_LINEAR,
                                                         borderMode=cv2.BORDER_REPLICATE)
        faces, _, scores = face_cascade.detectMultiScale3(turned, scaleFactor=SCALE_STEP, minNeighbors=5,
                                                          minSize=(MIN_FACE, MIN_FACE), outputRejectLevels=True)
        if not len(faces):
            continue
        # several faces: by size, among those the cascade is nearly as sure of as of its best one
        # (its last stage's score: a collar or a patterned shirt can pass with a low one); the
        # largest whose eyes are found, else the largest with a sure score, else search on
        scores = np.ravel(scores)
        kept = sorted(((f, c) for f, c in zip(faces, scores) if c >= SURE_FRACTION * scores.max()),
                      key=lambda fc: -fc[0][2] * fc[0][3])
        to_photo = _invert(_compose(turn, to_small))  # turned-copy pixels -> photo pixels
        for (x, y, w, h), _ in kept:
            eyes = _eyes_in_box(gray, to_photo, (float(x), float(y), float(w), float(h)))
            if eyes is not None:
                return Eyes(*eyes, _corners(to_photo, x, y, w, h), from_cascade=True, faces=len(kept))
        (x, y, w, h), score = kept[0]
        if score >= SURE_SCORE:
            left, right = (_apply(to_photo, (x + u * w, y + v * h)) for u, v in BOX_EYES)
            return Eyes(left, right, _corners(to_photo, x, y, w, h), from_cascade=False, faces=len(kept))
    return None


def _corners(to_photo: np.ndarray, x, y, w, h) -> tuple[tuple[float, float], ...]:
    return tuple(_apply(to_photo, p) for p in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)))


def _eyes_in_box(gray: np.ndarray, to_photo: np.ndarray, box) -> tuple | None:
    """Eye centres (photo pixels) from the eye cascade on the face box's upper half, or None."""
    import cv2

    x, y, w, h = box
    top, bottom = 0.12, 0.62  # the strip of the box searched, fractions of its height
    roi_w, roi_h = EYE_ROI, round(EYE_ROI * (bottom - top) * h / w)
    # roi pixels -> turned-copy pixels -> photo pixels
    k = w / roi_w
    roi_to_photo = _compose(to_photo, np.array([[k, 0, x], [0, k, y + top * h]]))
    # resample from a copy shrunk with area averaging so that the strip is read at about 1:1
    photo_per_roi = math.hypot(roi_to_photo[0, 0], roi_to_photo[1, 0])
    shrink = min(1.0, 1.0 / photo_per_roi)
    source = gray
    if shrink < 0.9:
        source = cv2.resize(gray, (max(1, round(gray.shape[1] * shrink)), max(1, round(gray.shape[0] * shrink))),
                            interpolation=cv2.INTER_AREA)
    sample = _compose(_scaling(shrink), roi_to_photo)  # roi pixels -> source pixels
    roi = cv2.warpAffine(source, _to_cv(sample), (roi_w, roi_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    roi = cv2.equalizeHist(roi)
    found = _cascade("haarcascade_eye.xml").detectMultiScale(roi, scaleFactor=1.05, minNeighbors=3,
                                                              minSize=(roi_w // 8, roi_w // 8),
                                                              maxSize=(roi_w * 2 // 5, roi_w * 2 // 5))
    if not len(found):
        return None
    centres = [(ex + ew / 2, ey + eh / 2) for ex, ey, ew, eh in found]
    expected = [(u * roi_w, (v - top) * h / k) for u, v in BOX_EYES]
    best = []
    for side, (qx, qy) in enumerate(expected):
        on_side = [c for c in centres if (c[0] < roi_w / 2) == (side == 0)]
        if not on_side:
            return None
        best.append(min(on_side, key=lambda c: math.hypot(c[0] - qx, c[1] - qy)))
    (lx, ly), (rx, ry) = best
    distance = math.hypot(rx - lx, ry - ly) / roi_w
    tilt = math.degrees(math.atan2(ry - ly, rx - lx))
    if not (0.25 <= distance <= 0.65 and abs(tilt) <= 20):
        return None
    return _apply(roi_to_photo, best[0]), _apply(roi_to_photo, best[1])


# ---- alignment ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Aligned:
    """What the model sees, and what was done to get it.

    image: the ``size`` x ``size`` RGB crop; has_face: a face was found; is_aligned: its eyes were
    put where the framing has them (False: the largest centred square); message: one sentence for
    the page; eyes: the eye centres found in the photo (photo pixels), or None; transform: (2, 3)
    affine map from photo pixels to the crop's [0, 1] coordinates, or None for a centre crop.
    """
    image: Image.Image
    has_face: bool
    is_aligned: bool
    message: str
    eyes: Eyes | None = None
    transform: np.ndarray | None = None


def align(image: Image.Image, framing: Mapping | None, *, size: int) -> Aligned:
    """The face in ``image`` cropped so that its eyes land where ``framing`` has them, at ``size``
    pixels; the largest centred square when there is no framing or no face. Never raises for an
    image: any mode, any size (tiny, huge, flat, no face) gives a crop and a message."""
    if int(size) < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    size = int(size)
    framing = None if framing is None else check_framing(framing)
    rgb = to_rgb(image)
    if framing is None:
        return Aligned(center_crop_resize(rgb, size=size), False, False,
                       "This model does not say where its training faces have their eyes, so the photo's "
                       "centred square is used as it is.")
    eyes = find_eyes(rgb)
    if eyes is None:
        return Aligned(center_crop_resize(rgb, size=size), False, False,
                       "No face was found in this photo, so its centred square is used; a photo of one face, "
                       "looking at the camera, works best.")
    transform = eye_transform(eyes.left, eyes.right, framing)
    crop = warp(rgb, transform, size=size)
    several = f" ({eyes.faces} faces were found; the largest is used)" if eyes.faces > 1 else ""
    if eyes.from_cascade:
        message = f"A face was found and aligned: its eyes are placed where the model's training faces have them{several}."
    else:
        message = (f"A face was found and aligned from its outline; its eyes were not found, so the alignment "
                   f"is approximate{several}.")
    return Aligned(crop, True, True, message, eyes, transform)


def align_source(source: "ImageSource", framing: Mapping | None, *, size: int) -> Aligned:
    """:func:`align` of a file, bytes or stream; unreadable input raises ``images.ImageError``."""
    return align(open_image(source), framing, size=size)


def eye_transform(left: tuple[float, float], right: tuple[float, float], framing: Mapping) -> np.ndarray:
    """(2, 3) affine map from photo pixels to the crop's [0, 1] coordinates that takes the eyes
    ``left`` and ``right`` to the framing's: a similarity into the undistorted frame
    (x, y / aspect), then y scaled by aspect."""
    framing = check_framing(framing)
    aspect = framing["aspect"]
    p = np.array([left, right], dtype=np.float64)
    q = np.array([framing["left_eye"], framing["right_eye"]], dtype=np.float64) / [1.0, aspect]
    dp, dq = p[1] - p[0], q[1] - q[0]
    if not np.hypot(*dp) > 0:
        raise ValueError(f"the two eyes are at the same place {tuple(p[0])}")
    # the complex ratio dq / dp is the rotation and scale: c = a + ib, T(p) = c p + t
    c = complex(*dq) / complex(*dp)
    a, b = c.real, c.imag
    similarity = np.array([[a, -b, 0.0], [b, a, 0.0]])
    similarity[:, 2] = q[0] - similarity[:, :2] @ p[0]
    return _compose(np.array([[1.0, 0, 0], [0, aspect, 0]]), similarity)


def warp(image: Image.Image, transform: np.ndarray, *, size: int) -> Image.Image:
    """Resample an RGB image through ``transform`` (photo pixels -> [0, 1] crop coordinates) into
    a ``size`` x ``size`` crop; beyond the photo's edge its edge pixels are repeated."""
    import cv2

    big = size * SUPERSAMPLE
    to_big = _compose(_scaling(big), transform)  # photo pixels -> supersampled crop pixels
    # photo pixels per crop pixel along each of the crop's axes: shrink the photo first when > 1
    photo_per_px = 1.0 / min(math.hypot(to_big[0, 0], to_big[1, 0]), math.hypot(to_big[0, 1], to_big[1, 1]))
    array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    if photo_per_px > 1.25:
        shrink = 1.0 / photo_per_px
        h, w = array.shape[:2]
        new = (max(1, round(w * shrink)), max(1, round(h * shrink)))
        array = cv2.resize(array, new, interpolation=cv2.INTER_AREA)
        to_big = _compose(to_big, _scaling(w / new[0], h / new[1]))
    out = cv2.warpAffine(array, _to_cv(to_big), (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if SUPERSAMPLE > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return Image.fromarray(out, mode="RGB")


# 2-D affine maps as (2, 3) arrays acting on [x, y, 1]; pixel coordinates put the image's edges
# at 0 and width (a pixel's centre at i + 0.5). OpenCV puts pixel centres at integers: _to_cv.
def _scaling(sx: float, sy: float | None = None) -> np.ndarray:
    return np.array([[sx, 0.0, 0.0], [0.0, sx if sy is None else sy, 0.0]])


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer after inner."""
    out = outer[:, :2] @ np.asarray(inner, dtype=np.float64)
    out[:, 2] += outer[:, 2]
    return out


def _invert(m: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(m[:, :2])
    return np.concatenate([inv, -inv @ m[:, 2:]], 1)


def _apply(m: np.ndarray, point) -> tuple[float, float]:
    x, y = m[:, :2] @ np.asarray(point, dtype=np.float64) + m[:, 2]
    return float(x), float(y)


def _to_cv(m: np.ndarray) -> np.ndarray:
    """The same map between pixel-centre coordinates (OpenCV's): shift by half a pixel each side."""
    half = np.array([[1.0, 0, 0.5], [0, 1.0, 0.5]])
    back = np.array([[1.0, 0, -0.5], [0, 1.0, -0.5]])
    return _compose(back, _compose(m, half))


# ---- out of domain ------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction_errors(model, images, *, batch_size: int = 256) -> torch.Tensor:
    """e(x) = mean over pixels and channels of (x - decode(mode q(z | x)))^2, one per image: (N,).

    images: float (N, C, S, S) in [0, 1] (a tensor), or uint8 (N, S, S, C) (a numpy array or memmap,
    as datasets store them), with S = model.image_size."""
    from . import editing

    n = len(images)
    errors = []
    for start in range(0, n, batch_size):
        x = _as_batch(model, images[start:start + batch_size])
        r = editing.reconstruct(model, x)
        errors.append((x - r).pow(2).mean((1, 2, 3)).float().cpu())
    return torch.cat(errors) if errors else torch.zeros(0)


def _as_batch(model, x) -> torch.Tensor:
    s, c = model.image_size, model.config["in_channels"]
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (s, s, c):
            raise ValueError(f"numpy images must be uint8 (N, {s}, {s}, {c}), got {x.dtype} {x.shape}")
        x = torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).float() / 255.0
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (c, s, s):
        raise ValueError(f"images must be a float tensor (N, {c}, {s}, {s}) in [0, 1] or uint8 (N, {s}, {s}, {c}), "
                         f"got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
    return x.to(model.device, torch.float32)


def summarize_errors(errors, *, images: str) -> dict:
    """The stored form of held-out reconstruction errors: {"images": what they were, "n", "p50",
    "p90", "p99", "max"} (quantiles by linear interpolation)."""
    e = torch.as_tensor(errors, dtype=torch.float64).flatten()
    if e.numel() < MIN_HELD_OUT:
        raise ValueError(f"a 99th percentile needs at least {MIN_HELD_OUT} held-out images, got {e.numel()}")
    if not torch.isfinite(e).all() or (e < 0).any():
        raise ValueError("reconstruction errors must be finite and non-negative")
    q = torch.quantile(e, torch.tensor(list(QUANTILES.values()), dtype=torch.float64))
    return check_error_stats({"images": images, "n": int(e.numel()),
                              **{k: float(v) for k, v in zip(QUANTILES, q)}})


def check_error_stats(stats: Mapping) -> dict:
    """A validated copy of stored reconstruction-error statistics; ValueError naming the bad entry."""
    keys = ("images", "n", *QUANTILES)
    if not isinstance(stats, Mapping) or set(stats) != set(keys):
        got = sorted(stats) if isinstance(stats, Mapping) else type(stats).__name__
        raise ValueError(f"reconstruction_error must be a dict with keys {list(keys)}, got {got}")
    out = {"images": str(stats["images"]), "n": int(stats["n"])}
    if out["n"] < MIN_HELD_OUT:
        raise ValueError(f"reconstruction_error['n'] = {stats['n']}: at least {MIN_HELD_OUT} held-out images are needed")
    previous = 0.0
    for key in QUANTILES:
        value = float(stats[key])
        if not (math.isfinite(value) and value >= previous):
            raise ValueError(f"reconstruction_error[{key!r}] = {stats[key]!r} must be finite and at least {previous} "
                             f"(quantiles {list(QUANTILES)} in increasing order)")
        out[key] = previous = value
    return out


def fit_reconstruction_error(model, images, *, description: str) -> dict:
    """Measure e(x) on held-out ``images`` (as in :func:`reconstruction_errors`), store its summary in
    ``model.config["reconstruction_error"]`` (saved with the weights) and return it.
    description: which images they were, e.g. "synthetic test split, 5000 faces"."""
    was_training = model.training
    model.eval()
    try:
        stats = summarize_errors(reconstruction_errors(model, images), images=description)
    finally:
        model.train(was_training)
    model.config["reconstruction_error"] = stats
    return stats


@dataclass(frozen=True)
class DomainCheck:
    """error: e(x) of the photo; threshold: the held-out 99th percentile (None: the model stores
    none); is_out_of_domain: error > threshold; message: what the page says."""
    error: float
    threshold: float | None
    is_out_of_domain: bool
    message: str


def check_domain(model, x: torch.Tensor) -> DomainCheck:
    """Whether one image x (C, S, S) or (1, C, S, S), in [0, 1], is beyond the 99th percentile of the
    model's held-out reconstruction errors (``model.config["reconstruction_error"]``)."""
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"check_domain takes one image, (C, S, S) or (1, C, S, S); got {tuple(x.shape)}")
    model_was_training = model.training
    model.eval()
    try:
        error = float(reconstruction_errors(model, x)[0])
    finally:
        model.train(model_was_training)
    stats = model.config.get("reconstruction_error")
    if stats is None:
        return DomainCheck(error, None, False,
                           "This model stores no reconstruction errors of held-out images, so it cannot tell "
                           "whether this photo is like the faces it was trained on.")
    p99 = stats["p99"]
    if error > p99:
        return DomainCheck(error, p99, True,
                           f"This photo is far from the faces this model was trained on ({stats['images']}): it "
                           f"reconstructs it with a mean squared error of {error:.4f}, above the {p99:.4f} that 99 % "
                           f"of its held-out images stay under, so edits may not look like the photo. "
                           + CHECKPOINT_HINT)
    return DomainCheck(error, p99, False,
                       f"This photo is within what the model knows: reconstruction error {error:.4f}, "
                       f"under the 99th percentile {p99:.4f} of its held-out images.")
