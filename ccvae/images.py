"""Images in and out of the model: decoding user files robustly, tensors <-> PIL.

The model sees ``(B, 3, S, S)`` float tensors in [0, 1] with ``S = model.image_size``.
Anything a person may upload (a phone photo with an EXIF rotation, a 16-bit PNG, a CMYK
JPEG, an animated GIF, a decompression bomb, a file that is not an image at all) goes
through :func:`load_image`, which either returns an RGB square of the requested size or
raises :class:`ImageError` (a ``ValueError``) whose message names the problem.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor, to_pil_image
from torchvision.utils import make_grid

ImageSource = Union[str, os.PathLike, bytes, BinaryIO]

MAX_PIXELS = 40_000_000  # ~ a 7000 x 5700 photo; larger is refused before decoding
MIN_SIDE = 8  # below this there is no face to crop


class ImageError(ValueError):
    """An input that cannot be turned into a face image; the message says why."""


def load_image(source: ImageSource, *, size: int) -> Image.Image:
    """Decode ``source`` into an RGB ``size`` x ``size`` image ready for the encoder.

    EXIF orientation is honoured, the first frame of an animation is used, any mode
    (16-bit, CMYK, palette, grayscale, with or without alpha over white) becomes 8-bit
    RGB, and the largest centred square is cropped and resized with a smooth filter.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    image = open_image(source)
    return center_crop_resize(image, size=size)


def open_image(source: ImageSource) -> Image.Image:
    """Decode ``source`` into an upright 8-bit RGB image of its own size."""
    name = _describe(source)
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            # Pillow warns (and beyond 2x its limit raises) on huge images; our own
            # MAX_PIXELS check below runs on the header, before any pixel is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{name} is too large: {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
                    f"images up to {MAX_PIXELS / 1e6:.0f} MP are accepted"
                )
            if min(width, height) < MIN_SIDE:
                raise ImageError(
                    f"{name} is {width}x{height} pixels; both sides must be at least "
                    f"{MIN_SIDE} pixels to hold a face"
                )
            image.seek(0)  # first frame of an animated GIF / WebP / APNG
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(
            f"{name} is too large to decode safely ({error}); "
            f"images up to {MAX_PIXELS / 1e6:.0f} MP are accepted"
        ) from error
    except UnidentifiedImageError as error:
        raise ImageError(
            f"{name} is not an image we can read; use a PNG, JPEG or WebP file"
        ) from error
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as error:
        # Pillow reports truncated or corrupt data as OSError ("image file is truncated",
        # "broken data stream"), SyntaxError or ValueError (bad headers) or EOFError.
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({error})") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is composited over white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # High bit-depth grayscale: rescale to 8 bits instead of clipping at 255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F" and array.max() <= 1.0:
            peak = 1.0
        array = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def center_crop_resize(image: Image.Image, *, size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` x ``size``."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side == size:
        return square
    # reducing_gap keeps downscaling of huge photos fast without visible aliasing.
    return square.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)


def to_tensor(images: Image.Image | list[Image.Image]) -> torch.Tensor:
    """RGB PIL image(s) -> ``(B, 3, H, W)`` float32 in [0, 1]."""
    if isinstance(images, Image.Image):
        images = [images]
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def to_pil(x: torch.Tensor) -> Image.Image | list[Image.Image]:
    """``(3, H, W)`` -> one image; ``(B, 3, H, W)`` -> a list of images. Values in [0, 1]."""
    if x.dim() not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W), got shape {tuple(x.shape)}")
    batch = x.unsqueeze(0) if x.dim() == 3 else x
    arrays = (batch.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    arrays = arrays.permute(0, 2, 3, 1).cpu().numpy()
    images = [Image.fromarray(array, mode="RGB") for array in arrays]
    return images[0] if x.dim() == 3 else images


def to_png(image: Image.Image) -> bytes:
    """The image as PNG file contents (lossless), at zlib's fastest level: several times faster
    than Pillow's default, for a few percent more bytes."""
    with io.BytesIO() as buffer:
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def to_data_url(image: Image.Image) -> str:
    """``data:image/png;base64,...``: the image inline, with no file for a browser to fetch
    (a 64 px face is about 13 kB of text)."""
    return "data:image/png;base64," + base64.b64encode(to_png(image)).decode("ascii")


def grid(images: list[Image.Image], *, columns: int) -> Image.Image:
    """Tile equally sized images row by row into one image (white where the last row is short)."""
    if not images:
        raise ValueError("grid needs at least one image")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    tiles = torch.stack([pil_to_tensor(image.convert("RGB")) for image in images])  # (N, 3, H, W) uint8
    missing = -len(images) % columns  # white tiles that complete the last row
    tiles = torch.cat([tiles, torch.full_like(tiles[:1], 255).expand(missing, -1, -1, -1)])
    return to_pil_image(make_grid(tiles, nrow=columns, padding=0))


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    if isinstance(source, (bytes, bytearray)):
        return f"the uploaded data ({len(source)} bytes)"
    return f"'{getattr(source, 'name', 'the uploaded file')}'"

