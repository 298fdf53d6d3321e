"""CelebA from a tiny folder in the official layout (and the Kaggle CSV layout)."""
import numpy as np
import pytest
from PIL import Image

from train.data import ATTRIBUTES, PAPER_LABELS, DatasetError, load_dataset

N = 30
PARTITION = [0] * 18 + [1] * 6 + [2] * 6


def _attrs(i):
    return [1 if (i * 7 + j * 3) % 5 < 2 else -1 for j in range(len(ATTRIBUTES))]


def make_celeba(root, *, kaggle=False):
    """N generated 178x218 JPEGs and the annotation files, as released (or as Kaggle mirrors them)."""
    images = root / "img_align_celeba" / ("img_align_celeba" if kaggle else "")
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"{i + 1:06d}.jpg" for i in range(N)]
    for i, name in enumerate(names):
        arr = np.full((218, 178, 3), (i * 8) % 256, np.uint8)
        arr[60:160, 40:140] = rng.integers(0, 255, 3)  # a "face" block in the middle
        Image.fromarray(arr).save(images / name, quality=90)
    if kaggle:
        (root / "list_attr_celeba.csv").write_text(
            "image_id," + ",".join(ATTRIBUTES) + "\n"
            + "".join(f"{n}," + ",".join(map(str, _attrs(i))) + "\n" for i, n in enumerate(names)))
        (root / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in zip(names, PARTITION)))
    else:  # the official whitespace format: count, header, "name  v  v ..." with -1/1
        (root / "list_attr_celeba.txt").write_text(
            f"{N}\n" + " ".join(ATTRIBUTES) + " \n"
            + "".join(f"{n} " + " ".join(f"{v:2d}" for v in _attrs(i)) + "\n" for i, n in enumerate(names)))
        (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, PARTITION)))
    return root


@pytest.mark.parametrize("kaggle", [False, True])
def test_official_partition_and_paper_labels(tmp_path, kaggle):
    root = make_celeba(tmp_path / "celeba", kaggle=kaggle)
    sizes = {s: len(load_dataset("celeba", s, root=root, cache_dir=tmp_path / "cache", progress=False))
             for s in ("train", "val", "test")}
    assert sizes == {"train": 18, "val": 6, "test": 6}
    ds = load_dataset("celeba", "val", root=root, cache_dir=tmp_path / "cache", progress=False)
    assert ds.label_names == PAPER_LABELS and len(PAPER_LABELS) == 18
    assert ds.images.shape == (6, 64, 64, 3) and isinstance(ds.images, np.memmap) and ds.factors is None
    expected = np.array([[int(v > 0) for v in _attrs(i)] for i in range(18, 24)])
    cols = [ATTRIBUTES.index(n) for n in PAPER_LABELS]
    np.testing.assert_array_equal(ds.labels, expected[:, cols])
    # The image of row 0 is 000019.jpg: its grey border value survives the resize.
    assert abs(int(ds.images[0, 1, 1, 0]) - (18 * 8) % 256) <= 3


def test_any_attribute_by_name_crop_and_limit(tmp_path):
    root = make_celeba(tmp_path / "celeba")
    ds = load_dataset("celeba", "train", root=root, label_names=["Wearing_Hat", "Young"], center_crop=True,
                      image_size=32, limit=5, cache_dir=tmp_path / "cache", progress=False)
    assert ds.label_names == ["Wearing_Hat", "Young"] and ds.images.shape == (5, 32, 32, 3)
    plain = load_dataset("celeba", "train", root=root, image_size=32, limit=5, cache_dir=tmp_path / "cache",
                         progress=False)
    # The crop keeps the middle square: the coloured block covers more of the picture.
    assert not np.array_equal(ds.images, plain.images)
    with pytest.raises(DatasetError, match="unknown CelebA attributes \\['Wearing_Cape'\\]"):
        load_dataset("celeba", root=root, label_names=["Wearing_Cape"], cache_dir=tmp_path / "cache")


def test_incomplete_folder_says_what_is_missing_and_where_to_get_it(tmp_path):
    root = make_celeba(tmp_path / "celeba")
    (root / "list_eval_partition.txt").unlink()
    with pytest.raises(DatasetError, match="missing list_eval_partition.txt.*CelebA can be obtained"):
        load_dataset("celeba", root=root, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("celeba", root=tmp_path / "nowhere", cache_dir=tmp_path / "cache")


def test_corrupt_jpeg_is_named(tmp_path):
    root = make_celeba(tmp_path / "celeba")
    (root / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="000002.jpg"):
        load_dataset("celeba", "train", root=root, cache_dir=tmp_path / "cache", progress=False)
    assert not any(p.name.startswith(".") for p in (tmp_path / "cache").iterdir())  # no partial entry left
