"""ccvae.images: every kind of upload is either turned into an RGB square or refused clearly."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ccvae import images
from ccvae.images import ImageError

SIZE = 32


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def two_tone(width: int, height: int) -> Image.Image:
    """Left half red, right half blue: shows crops and rotations."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but that carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))  # one row of the grayscale image
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def assert_rgb_square(image: Image.Image) -> None:
    assert image.mode == "RGB"
    assert image.size == (SIZE, SIZE)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_common_formats_become_rgb_squares(fmt):
    image = images.load_image(encode(two_tone(120, 80), fmt), size=SIZE)
    assert_rgb_square(image)
    left, right = np.asarray(image)[SIZE // 2, 2], np.asarray(image)[SIZE // 2, -3]
    assert left[0] > 200 and left[2] < 60  # red stays on the left
    assert right[2] > 200 and right[0] < 60


def test_center_crop_keeps_the_middle_of_a_wide_image():
    # 300x100: outer thirds black, centre third white -> the crop is all white.
    array = np.zeros((100, 300, 3), dtype=np.uint8)
    array[:, 100:200] = 255
    image = images.load_image(encode(Image.fromarray(array), "PNG"), size=SIZE)
    assert np.asarray(image).min() > 240


def test_exif_orientation_is_honoured():
    # Stored landscape red|blue; EXIF 6 ("rotate 90 CW to display") makes red the top.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(two_tone(64, 64), "JPEG", exif=exif.tobytes(), quality=95)
    pixels = np.asarray(images.load_image(data, size=SIZE)).astype(int)
    top, bottom = pixels[2, SIZE // 2], pixels[-3, SIZE // 2]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_sixteen_bit_png_is_rescaled_not_clipped():
    array = np.full((40, 40), 32768, dtype=np.uint16)  # mid gray in 16 bits
    data = encode(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    pixels = np.asarray(images.load_image(data, size=SIZE))
    assert 120 <= pixels.mean() <= 136


def test_cmyk_jpeg_grayscale_and_palette_are_converted():
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # red in CMYK
    red = np.asarray(images.load_image(encode(cmyk, "JPEG"), size=SIZE)).astype(int)
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60
    gray = images.load_image(encode(Image.new("L", (40, 40), 77), "PNG"), size=SIZE)
    assert_rgb_square(gray)
    assert np.abs(np.asarray(gray).astype(int) - 77).max() <= 1
    palette = images.load_image(
        encode(two_tone(40, 40).convert("P", palette=Image.Palette.ADAPTIVE), "PNG"), size=SIZE
    )
    assert_rgb_square(palette)


def test_transparency_is_composited_over_white():
    clear = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    pixels = np.asarray(images.load_image(encode(clear, "PNG"), size=SIZE))
    assert pixels.min() > 250


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    pixels = np.asarray(images.load_image(buffer.getvalue(), size=SIZE)).astype(int)
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 60


def test_paths_are_accepted(tmp_path):
    path = tmp_path / "face.png"
    two_tone(50, 50).save(path)
    assert_rgb_square(images.load_image(path, size=SIZE))
    assert_rgb_square(images.load_image(str(path), size=SIZE))


@pytest.mark.parametrize(
    "data, words",
    [
        (b"this is a text file, not a picture", "not an image"),
        (b"", "not an image"),
        (encode(two_tone(200, 200), "PNG")[:300], "truncated"),
        (encode(Image.new("RGB", (1, 1)), "PNG"), "1x1"),
        (png_header_only(20000, 20000), "too large"),
        (png_header_only(10000, 10000), "too large: 10000x10000"),
    ],
    ids=["text", "empty", "truncated", "one-pixel", "decompression-bomb", "over-our-limit"],
)
def test_bad_inputs_raise_a_message_naming_the_problem(data, words):
    with pytest.raises(ImageError, match=words):
        images.load_image(data, size=SIZE)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_tensor_round_trip_is_exact_on_8_bit_images():
    image = two_tone(16, 16)
    x = images.to_tensor(image)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.array_equal(np.asarray(images.to_pil(x[0])), np.asarray(image))
    assert len(images.to_pil(torch.rand(3, 3, 8, 8))) == 3


def test_to_pil_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
        images.to_pil(torch.rand(1, 8, 8))


def test_grid_tiles_row_by_row():
    tiles = [Image.new("RGB", (4, 4), (k * 40, 0, 0)) for k in range(5)]
    sheet = images.grid(tiles, columns=3)
    assert sheet.size == (12, 8)
    assert sheet.getpixel((4, 0))[0] == 40 and sheet.getpixel((0, 4))[0] == 120
