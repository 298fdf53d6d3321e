"""The user's own images: a folder and a CSV, with a corrupt file, a missing one, unknown cells."""
import warnings

import numpy as np
import pytest
from PIL import Image

from train.data import DatasetError, load_dataset, semi_supervised


def make_folder(root, n=12):
    root.mkdir(parents=True)
    rows = ["file,Smiling,Eyeglasses"]
    for i in range(n):
        Image.fromarray(np.full((40, 50, 3), (i * 20) % 256, np.uint8)).save(root / f"img{i}.png")
        smile = "" if i % 4 == 3 else str(i % 2)
        rows.append(f"img{i}.png,{smile},{int(i < 3)}")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    rows += ["broken.jpg,1,0", "gone.png,0,1"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_reads_labels_and_skips_unreadable_images_by_name(tmp_path):
    root = make_folder(tmp_path / "mine")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\) of 14.*broken.jpg.*gone.png"):
        ds = load_dataset("folder", "all", root=root, labels_csv=root / "labels.csv", cache_dir=tmp_path / "c",
                          progress=False)
    assert len(ds) == 12 and [f for f, _ in ds.skipped] == ["broken.jpg", "gone.png"]
    assert ds.label_names == ["Smiling", "Eyeglasses"] and ds.images.shape == (12, 64, 64, 3)
    assert ds.labels[3].tolist() == [-1, 0] and ds.labels[1].tolist() == [1, 1]
    assert int(ds.images[5].mean()) == 100  # img5 is flat grey 100, resized
    # Every epoch reads the cache: a second load decodes nothing and warns the same way.
    with pytest.warns(UserWarning, match="skipped 2"):
        again = load_dataset("folder", "all", root=root, labels_csv=root / "labels.csv", cache_dir=tmp_path / "c",
                             progress=False)
    assert np.array_equal(again.images, ds.images)


def test_rows_with_unknown_cells_go_unlabelled(tmp_path):
    root = make_folder(tmp_path / "mine")
    with pytest.warns(UserWarning):
        ds = load_dataset("folder", "all", root=root, labels_csv=root / "labels.csv", cache_dir=tmp_path / "c",
                          progress=False)
    labelled, unlabelled = semi_supervised(ds, 1.0)
    assert len(labelled) == 9 and len(unlabelled) == 3 and unlabelled.labels is None
    assert (labelled.labels >= 0).all()


@pytest.mark.parametrize("csv, message", [
    ("file,Smiling\nimg0.png,1,0\n", "line 2: 3 columns, but the header has 2"),
    ("file,Smiling\nimg0.png,yes\n", "line 2, column 'Smiling': value 'yes'"),
    ("file\nimg0.png\n", "at least one label column"),
    ("file,Smiling,Smiling\nimg0.png,1,0\n", "distinct"),
])
def test_csv_that_does_not_fit_is_a_clear_error(tmp_path, csv, message):
    root = make_folder(tmp_path / "mine")
    (root / "bad.csv").write_text(csv)
    with pytest.raises(DatasetError, match=message):
        load_dataset("folder", "all", root=root, labels_csv=root / "bad.csv", cache_dir=tmp_path / "c")


def test_folder_splits_are_disjoint_and_stable(tmp_path):
    root = make_folder(tmp_path / "mine", n=60)
    files = {}
    for split in ("train", "val", "test"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # broken.jpg / gone.png land in some split
            files[split] = set(load_dataset("folder", split, root=root, labels_csv=root / "labels.csv",
                                            cache_dir=tmp_path / "c", progress=False).files)
    assert not (files["train"] & files["val"]) and not (files["train"] & files["test"]) and not (files["val"] & files["test"])
    assert len(files["train"] | files["val"] | files["test"]) == 60


def test_cli_preview_and_stats(tmp_path, capsys):
    from train.data.__main__ import main, parse_args

    root = make_folder(tmp_path / "mine")
    common = ["folder", "--root", str(root), "--labels", str(root / "labels.csv"), "--cache-dir", str(tmp_path / "c")]
    with pytest.warns(UserWarning):
        out = main(parse_args(["preview", *common, "--n", "6", "--out", str(tmp_path / "grid.png")]))
    assert Image.open(out).size[0] == 3 * (128 + 4)
    with pytest.warns(UserWarning):
        freq = main(parse_args(["stats", *common]))
    assert freq == {"Smiling": pytest.approx(3 / 9), "Eyeglasses": pytest.approx(3 / 12)}
    assert "12 images" in capsys.readouterr().out
