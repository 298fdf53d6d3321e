"""ccvae.photos: face alignment to a model's framing, and the out-of-domain check.

The real photo is scikit-image's astronaut.png (512 x 512, Eileen Collins), shipped inside its
wheel. Its eye centres, marked by hand on an enlarged crop and checked by eye: (204.2, 101.3)
and (248.0, 103.3) pixels (the haarcascade_eye boxes centre within 3 pixels of them).
"""
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from ccvae import CCVAE, CheckpointError
from ccvae.images import to_tensor
from ccvae.photos import (Aligned, align, check_domain, check_error_stats, check_framing, eye_transform,
                          fit_reconstruction_error, reconstruction_errors, summarize_errors)
from conftest import tiny_model
from train.data import framing, load_folder

BUNDLED = Path(__file__).resolve().parent.parent / "checkpoints" / "synthetic-faces"
ASTRONAUT_EYES = np.array([(204.2, 101.3), (248.0, 103.3)])
TOLERANCE = 0.04  # of the image width


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def eyes_in_crop(result: Aligned, eyes_in_photo: np.ndarray) -> np.ndarray:
    """Where the alignment put the reference eyes: (2, 2) in [0, 1] crop coordinates."""
    m = result.transform
    return eyes_in_photo @ m[:, :2].T + m[:, 2]


def framing_eyes(f: dict) -> np.ndarray:
    return np.array([f["left_eye"], f["right_eye"]])


def place(image: Image.Image, *, angle: float, scale: float, canvas: tuple[int, int], centre: tuple[float, float]):
    """image turned by angle degrees (counter-clockwise on screen) and scaled about its centre, put
    with its centre at `centre` on a grey canvas; returns it and the map of photo points onto it."""
    a = math.radians(angle)
    A = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    t = np.array(centre) - A @ (np.array(image.size) / 2)
    inv = np.linalg.inv(A)
    tinv = -inv @ t
    out = image.transform(canvas, Image.Transform.AFFINE, (*inv[0], tinv[0], *inv[1], tinv[1]),
                          Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    return out, lambda p: p @ A.T + t


@pytest.mark.parametrize("name", ["synthetic", "celeba", "celeba-crop"])
def test_astronaut_eyes_land_on_each_framing(name):
    f = framing("folder", align=name)
    result = align(astronaut(), f, size=64)
    assert result.has_face and result.is_aligned and result.eyes.from_cascade
    assert result.image.size == (64, 64) and result.image.mode == "RGB"
    assert np.abs(eyes_in_crop(result, ASTRONAUT_EYES) - framing_eyes(f)).max() < TOLERANCE
    assert "aligned" in result.message


# (angle, scale, canvas, where the photo's centre goes): turned, scaled, shifted, padded
PLACEMENTS = [
    (-15, 1.0, (512, 512), (256, 256)),
    (15, 1.0, (512, 512), (256, 256)),
    (0, 0.5, (512, 512), (150, 330)),
    (15, 0.5, (600, 450), (420, 300)),
    (-15, 2.0, (1024, 1024), (512, 620)),
    (0, 2.0, (1400, 900), (800, 700)),
    (10, 1.0, (1200, 800), (300, 400)),
    (-10, 1.5, (900, 1300), (450, 700)),
]


@pytest.mark.parametrize("angle,scale,canvas,centre", PLACEMENTS)
def test_moved_photo_aligns_to_the_same_place(angle, scale, canvas, centre):
    f = framing("synthetic")
    photo, move = place(astronaut(), angle=angle, scale=scale, canvas=canvas, centre=centre)
    result = align(photo, f, size=64)
    assert result.has_face and result.is_aligned
    assert np.abs(eyes_in_crop(result, move(ASTRONAUT_EYES)) - framing_eyes(f)).max() < TOLERANCE


def test_face_at_the_edge_is_padded():
    """The crop reaches past the photo's left edge; it is filled, not refused."""
    photo = astronaut().crop((150, 0, 512, 512))  # the face ~30 px from the left edge
    result = align(photo, framing("synthetic"), size=64)
    assert result.has_face and result.is_aligned
    corner_in_photo = np.linalg.solve(result.transform[:, :2], -result.transform[:, 2])  # crop (0, 0)
    assert corner_in_photo[0] < 0  # the crop starts left of the photo
    left_column = np.asarray(result.image)[:, 0]
    assert left_column.std() > 0 or left_column.mean() > 0  # an image, not a refusal


def test_aligned_crop_is_not_the_centre_crop():
    """The point of the issue: the whole portrait is no longer squeezed into the crop."""
    f = framing("synthetic")
    result = align(astronaut(), f, size=64)
    eyes = eyes_in_crop(result, ASTRONAUT_EYES)
    centre_crop_eyes = ASTRONAUT_EYES / 512
    assert np.abs(centre_crop_eyes - framing_eyes(f)).max() > 4 * TOLERANCE  # centre crop: far off
    assert np.abs(eyes - framing_eyes(f)).max() < TOLERANCE


def flat(size, colour=(90, 140, 200)):
    return Image.new("RGB", size, colour)


@pytest.mark.parametrize("make", [
    lambda: flat((640, 480)),
    lambda: Image.fromarray(skdata.grass()),  # a texture, no face
    lambda: Image.fromarray(skdata.coffee()),  # a cup, no face
    lambda: Image.fromarray((np.random.default_rng(0).random((300, 500, 3)) * 255).astype(np.uint8)),
], ids=["flat", "grass", "coffee", "noise"])
def test_no_face_gives_the_centre_crop_and_says_so(make):
    image = make()
    result = align(image, framing("synthetic"), size=64)
    assert not result.has_face and not result.is_aligned and result.transform is None
    assert "No face" in result.message
    assert result.image.size == (64, 64) and result.image.mode == "RGB"


@pytest.mark.parametrize("make", [
    lambda: flat((9, 9)),
    lambda: flat((1, 1)),
    lambda: flat((3000, 20)),
    lambda: flat((6000, 4000)),
    lambda: astronaut().convert("L"),
    lambda: astronaut().convert("RGBA"),
    lambda: astronaut().convert("P"),
    lambda: Image.fromarray((np.asarray(astronaut().convert("L")).astype(np.uint16) * 257)),  # 16-bit
    lambda: astronaut().resize((40, 40)),
], ids=["9px", "1px", "strip", "24MP", "gray", "rgba", "palette", "16bit", "thumbnail"])
def test_any_image_gives_a_crop_and_a_message(make):
    result = align(make(), framing("celeba"), size=32)
    assert result.image.size == (32, 32) and result.image.mode == "RGB"
    assert isinstance(result.message, str) and len(result.message) > 20


@pytest.mark.parametrize("make", [lambda: astronaut().convert("L"), lambda: astronaut().convert("RGBA")],
                         ids=["gray", "rgba"])
def test_gray_and_rgba_photos_are_aligned(make):
    f = framing("synthetic")
    result = align(make(), f, size=64)
    assert result.has_face and np.abs(eyes_in_crop(result, ASTRONAUT_EYES) - framing_eyes(f)).max() < TOLERANCE


def test_without_framing_the_centre_crop_is_used():
    result = align(astronaut(), None, size=64)
    assert not result.is_aligned and "centred square" in result.message
    assert np.array_equal(np.asarray(result.image), np.asarray(astronaut().resize((64, 64), Image.LANCZOS,
                                                                                 reducing_gap=3.0)))


def test_eye_transform_maps_the_eyes_and_squeezes_by_the_aspect():
    f = {"left_eye": [0.3, 0.5], "right_eye": [0.7, 0.5], "aspect": 0.5, "crop": "test"}
    m = eye_transform((100.0, 200.0), (140.0, 230.0), f)  # a tilted pair of eyes
    got = np.array([(100.0, 200.0), (140.0, 230.0)]) @ m[:, :2].T + m[:, 2]
    assert np.allclose(got, framing_eyes(f))
    # a unit step along the eye line maps to x; one across it maps to y, scaled by the aspect
    along, across = m[:, :2] @ np.array([0.8, 0.6]), m[:, :2] @ np.array([-0.6, 0.8])
    assert np.isclose(along[1], 0) and np.isclose(across[0], 0)
    assert np.isclose(across[1] / along[0], 0.5)


@pytest.mark.parametrize("bad,named", [
    ({"left_eye": [0.3, 0.5], "right_eye": [1.3, 0.5], "crop": "x"}, "right_eye"),
    ({"left_eye": [0.7, 0.5], "right_eye": [0.3, 0.5], "crop": "x"}, "left of right_eye"),
    ({"left_eye": [0.3], "right_eye": [0.7, 0.5], "crop": "x"}, "left_eye"),
    ({"left_eye": [0.3, 0.5], "right_eye": [0.7, 0.5]}, "crop"),
    ({"left_eye": [0.3, 0.5], "right_eye": [0.7, 0.5], "crop": "x", "aspect": 0}, "aspect"),
    ({"left_eye": [0.3, 0.5], "right_eye": [0.7, 0.5], "crop": "x", "eyes": 2}, "eyes"),
    ([0.3, 0.5], "dict"),
])
def test_bad_framing_is_refused_by_name(bad, named):
    with pytest.raises(ValueError, match=named):
        check_framing(bad)


def test_framings_of_the_datasets_are_valid_and_distinct():
    fs = [framing("synthetic"), framing("celeba"), framing("celeba", center_crop=True)]
    for f in fs:
        assert check_framing(f) == f
    assert framing("celeba")["aspect"] == pytest.approx(178 / 218)
    assert framing("folder") is None and framing("folder", align="synthetic") == framing("synthetic")


def test_synthetic_framing_matches_the_rendered_eyes():
    """The eye whites of rendered faces centre on the framing (the lids shift them down a little)."""
    from train.data import render_face, sample_factors

    centres = []
    for i in range(40):
        f = sample_factors(0, "test", i)
        if f["Eyeglasses"] or f["Narrow_Eyes"]:
            continue
        im = render_face(f, 128).astype(int)
        white = (im.min(-1) > 215) & (np.ptp(im, -1) < 20)
        white[:45], white[70:] = False, False
        ys, xs = np.nonzero(white)
        middle = 64 + f["pos_x"] * 0.03 * 128
        for side in (xs < middle, xs >= middle):
            centres.append(((xs[side].mean() + 0.5) / 128, (ys[side].mean() + 0.5) / 128))
    centres = np.array(centres).reshape(-1, 2, 2).mean(0)
    assert np.abs(centres - framing_eyes(framing("synthetic"))).max() < 0.015


# ---- config ------------------------------------------------------------------------------------
STATS = {"images": "test", "n": 200, "p50": 0.01, "p90": 0.02, "p99": 0.03, "max": 0.05}


def test_config_carries_framing_and_error_stats(tmp_path):
    model = tiny_model(framing=framing("celeba"), reconstruction_error=STATS)
    model.save_pretrained(tmp_path)
    loaded = CCVAE.from_pretrained(tmp_path)
    assert loaded.config["framing"] == check_framing(framing("celeba"))
    assert loaded.config["reconstruction_error"] == STATS


def test_config_without_the_keys_still_loads(tmp_path):
    model = tiny_model()
    assert model.config["framing"] is None and model.config["reconstruction_error"] is None
    model.save_pretrained(tmp_path)
    assert CCVAE.from_pretrained(tmp_path).config["framing"] is None


@pytest.mark.parametrize("key,value,named", [
    ("framing", {"left_eye": [0.3, 0.5], "right_eye": [0.7, 1.5], "crop": "x"}, "right_eye"),
    ("reconstruction_error", {**STATS, "p99": 0.001}, "p99"),
    ("reconstruction_error", {**STATS, "n": 3}, "n"),
])
def test_bad_entries_fail_loading_by_name(tmp_path, key, value, named):
    import json

    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[key] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=named):
        CCVAE.from_pretrained(tmp_path)


# ---- out of domain -----------------------------------------------------------------------------
def test_error_stats_and_the_99th_percentile():
    model = tiny_model().eval()
    x = torch.rand(150, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    errors = reconstruction_errors(model, x, batch_size=64)
    assert errors.shape == (150,) and torch.allclose(errors, reconstruction_errors(model, x, batch_size=7))
    stats = fit_reconstruction_error(model, x, description="noise")
    assert model.config["reconstruction_error"] == stats == check_error_stats(stats)
    assert stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"] == pytest.approx(errors.max().item())
    worst, typical = errors.argmax(), (errors - errors.median()).abs().argmin()
    far, near = check_domain(model, x[worst]), check_domain(model, x[typical])
    assert far.is_out_of_domain and "far from the faces" in far.message and "--checkpoint" in far.message
    assert "CCVAE_CHECKPOINT" in far.message
    assert not near.is_out_of_domain and near.error == pytest.approx(errors[typical].item())
    # uint8 (N, S, S, 3), as datasets store them, gives the same errors
    as_uint8 = (x * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert torch.allclose(reconstruction_errors(model, as_uint8), reconstruction_errors(model, torch.from_numpy(
        as_uint8).permute(0, 3, 1, 2).float() / 255))


def test_too_few_held_out_images_are_refused():
    with pytest.raises(ValueError, match="at least 100"):
        summarize_errors(torch.rand(20), images="few")


def test_model_without_stats_says_it_cannot_tell():
    check = check_domain(tiny_model().eval(), torch.rand(3, 16, 16))
    assert not check.is_out_of_domain and check.threshold is None and "cannot tell" in check.message


@pytest.fixture(scope="module")
def bundled():
    return CCVAE.from_pretrained(BUNDLED).eval()


def test_bundled_model_loads_with_its_framing_and_stats(bundled):
    assert bundled.config["framing"] == framing("synthetic")
    assert bundled.config["reconstruction_error"]["n"] >= 1000


def test_bundled_model_flags_a_real_photo_and_not_its_examples(bundled):
    def check(image):
        aligned = align(image, bundled.config["framing"], size=bundled.image_size)
        return check_domain(bundled, to_tensor(aligned.image))

    photo = check(astronaut())
    assert photo.is_out_of_domain and photo.error > 2 * photo.threshold
    examples = sorted((BUNDLED / "examples").glob("*.png"))
    assert len(examples) == 12
    for path in examples:
        assert not check(Image.open(path)).is_out_of_domain, path.name


# ---- train.data folder --------------------------------------------------------------------------
def test_folder_dataset_aligns_faces_when_asked(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    astronaut().save(root / "a.png")
    flat((200, 160)).save(root / "flat.png")
    (tmp_path / "labels.csv").write_text("file,Smiling\na.png,1\nflat.png,0\n")
    plain = load_folder(root, tmp_path / "labels.csv", image_size=64, cache_dir=tmp_path / "cache", progress=False)
    with pytest.warns(UserWarning, match="no face found in 1 of 2"):
        aligned = load_folder(root, tmp_path / "labels.csv", image_size=64, cache_dir=tmp_path / "cache",
                              progress=False, align=framing("synthetic"))
    assert len(aligned) == 2 and aligned.files == ["a.png", "flat.png"]
    expected = np.asarray(align(astronaut(), framing("synthetic"), size=64).image)
    assert np.array_equal(aligned.images[0], expected)
    assert not np.array_equal(plain.images[0], expected)
    assert np.array_equal(aligned.images[1], plain.images[1])  # no face: the centre crop, kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_folder(root, tmp_path / "labels.csv", image_size=64, cache_dir=tmp_path / "cache", progress=False)
