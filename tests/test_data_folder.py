"""The user's own images: a folder with labels for some of them (a CSV with Windows line endings,
partly filled and empty rows, images it does not list), and a CSV with every kind of mistake."""
import warnings

import numpy as np
import pytest
from PIL import Image

from train.data import DatasetError, load_dataset, semi_supervised
from train.data.labels import label_counts


def make_folder(root, n=12, unlisted=4):
    """n listed PNGs (img3, img7, ... have an empty smile cell; img11 every cell empty), `unlisted`
    JPEGs of 160x200 the CSV does not name, and an unlisted text file named broken.png."""
    root.mkdir(parents=True)
    rows = ["file,Smiling,Eyeglasses"]
    for i in range(n):
        Image.fromarray(np.full((40, 50, 3), (i * 20) % 256, np.uint8)).save(root / f"img{i}.png")
        smile = "" if i % 4 == 3 else str(i % 2)
        rows.append(f"img{i}.png,{smile},{'' if i == 11 else int(i < 3)}")
    for i in range(unlisted):
        Image.fromarray(np.full((200, 160, 3), 30 * i, np.uint8)).save(root / f"extra{i}.jpg")
    (root / "broken.png").write_text("not an image")
    (root / "labels.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return root


def load(root, csv="labels.csv", split="all", cache=None):
    return load_dataset("folder", split, root=root, labels_csv=root / csv, cache_dir=cache or root.parent / "c",
                        progress=False)


def test_every_image_is_used_listed_rows_labelled_unlisted_ones_unlabelled(tmp_path):
    root = make_folder(tmp_path / "mine")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\) of 17 .*broken.png"):
        ds = load(root)
    assert len(ds) == 16 and [f for f, _ in ds.skipped] == ["broken.png"]
    assert ds.label_names == ["Smiling", "Eyeglasses"] and ds.images.shape == (16, 64, 64, 3)
    row = dict(zip(ds.files, ds.labels.tolist()))
    assert row["img1.png"] == [1, 1] and row["img3.png"] == [-1, 0] and row["img11.png"] == [-1, -1]
    assert all(row[f"extra{i}.jpg"] == [-1, -1] for i in range(4))
    assert int(ds.images[ds.files.index("img5.png")].mean()) == 100  # img5 is flat grey 100, resized
    assert label_counts(ds.labels) == {"labelled": 9, "partly_labelled": 2, "unlabelled": 5,
                                       "labelled_cells": pytest.approx(20 / 32)}
    # Every epoch reads the cache: a second load decodes nothing and warns the same way.
    with pytest.warns(UserWarning, match="skipped 1"):
        again = load(root)
    assert np.array_equal(again.images, ds.images)


def test_partly_labelled_rows_keep_their_known_cells_and_unlabelled_rows_stay_out_of_f(tmp_path):
    root = make_folder(tmp_path / "mine")
    with pytest.warns(UserWarning):
        ds = load(root)
    labelled, unlabelled = semi_supervised(ds, 1.0)
    assert len(labelled) == 11 and len(unlabelled) == 5 and unlabelled.labels is None
    assert ((labelled.labels >= 0).any(1)).all() and (labelled.labels < 0).sum() == 2  # img3, img7: smile unknown
    half, rest = semi_supervised(ds, 0.5)
    assert len(half) == round(0.5 * 11) and len(rest) == 16 - len(half)


def test_every_problem_of_the_csv_is_reported_at_once_with_its_line(tmp_path):
    root = make_folder(tmp_path / "mine")
    (root / "bad.csv").write_bytes(b"file,Smiling,Eyeglasses\r\nimg0.png,yes,0\r\nimg1.png,1,-1\r\n"
                                   b"img2.png,1\r\nimg0.png,0,0\r\ngone.png,0,1\r\nbroken.png,1,1\r\n,1,1\r\n")
    with pytest.raises(DatasetError) as error:
        load(root, "bad.csv")
    lines = str(error.value).splitlines()
    assert lines[0].endswith("7 problem(s); fix them all, then run again:")
    assert lines[1:] == [
        "  line 2, column 'Smiling': value 'yes'; expected 0, 1 or empty (unknown)",
        "  line 3, column 'Eyeglasses': value '-1'; expected 0, 1 or empty (unknown)",
        "  line 4: 2 columns, but the header has 3 (file,Smiling,Eyeglasses)",
        "  line 5: img0.png is listed again (first on line 2)",
        f"  line 6: gone.png not found in {root}",
        "  line 7: broken.png is not an image (Pillow does not recognise its contents)",
        "  line 8: no file name in the first column",
    ]


@pytest.mark.parametrize("csv, message", [
    ("file\nimg0.png\n", "at least one label column"),
    ("file,Smiling,Smiling\nimg0.png,1,0\n", "distinct"),
])
def test_a_header_that_does_not_fit_is_a_clear_error(tmp_path, csv, message):
    root = make_folder(tmp_path / "mine")
    (root / "bad.csv").write_text(csv)
    with pytest.raises(DatasetError, match=message):
        load(root, "bad.csv")


def test_folder_splits_are_disjoint_and_stable(tmp_path):
    root = make_folder(tmp_path / "mine", n=60)
    files = {}
    for split in ("train", "val", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # broken.png lands in some split
            files[split] = set(load(root, split=split).files)
    assert not (files["train"] & files["val"]) and not (files["train"] & files["test"]) and not (files["val"] & files["test"])
    assert len(files["train"] | files["val"] | files["test"]) == 64


def test_cli_preview_and_stats_take_label_lists_as_train_does(tmp_path, capsys):
    from train.data.__main__ import main, parse_args

    root = make_folder(tmp_path / "mine")
    common = ["folder", "--root", str(root), "--labels", str(root / "labels.csv"), "--cache-dir", str(tmp_path / "c")]
    with pytest.warns(UserWarning):
        out = main(parse_args(["preview", *common, "--n", "6", "--out", str(tmp_path / "grid.png")]))
    assert Image.open(out).size[0] == 3 * (128 + 4)
    for names in (["Eyeglasses,Smiling"], ["Eyeglasses", "Smiling"]):
        with pytest.warns(UserWarning):
            freq = main(parse_args(["stats", *common, "--label-names", *names]))
        assert list(freq) == ["Eyeglasses", "Smiling"]
        assert freq == {"Smiling": pytest.approx(3 / 9), "Eyeglasses": pytest.approx(3 / 11)}
    assert "16 images" in capsys.readouterr().out
