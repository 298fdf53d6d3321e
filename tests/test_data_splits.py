"""Semi-supervised splits: deterministic from the seed, labels hidden on the unlabelled side."""
import numpy as np
import pytest

from train.data import ImageSet, semi_supervised


@pytest.fixture
def ds():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (500, 8, 8, 3), dtype=np.uint8)
    return ImageSet(images, rng.integers(0, 2, (500, 3)).astype(np.int8), ["a", "b", "c"], name="toy")


@pytest.mark.parametrize("frac", [0.004, 0.06, 0.2, 1.0, 0.33])
def test_fraction_is_deterministic_and_the_split_is_a_partition(ds, frac):
    labelled, unlabelled = semi_supervised(ds, frac, seed=4)
    again, _ = semi_supervised(ds, frac, seed=4)
    assert len(labelled) == max(1, round(frac * 500)) and len(labelled) + len(unlabelled) == 500
    assert unlabelled.labels is None and labelled.labels is not None
    a, b = labelled.source_indices(slice(None)), unlabelled.source_indices(slice(None))
    assert not set(a) & set(b) and np.array_equal(a, again.source_indices(slice(None)))
    np.testing.assert_array_equal(labelled.images, ds.images[a])
    np.testing.assert_array_equal(labelled.labels, ds.labels[a])
    if len(unlabelled) > 2:
        images, labels = unlabelled.take([2, 0])
        assert labels is None and np.array_equal(images, ds.images[b[[2, 0]]])


def test_seed_changes_the_pick_and_extremes(ds):
    a, _ = semi_supervised(ds, 0.2, seed=0)
    b, _ = semi_supervised(ds, 0.2, seed=1)
    assert not np.array_equal(a.source_indices(slice(None)), b.source_indices(slice(None)))
    none, everything = semi_supervised(ds, 0.0)
    assert len(none) == 0 and len(everything) == 500 and everything.labels is None
    all_, empty = semi_supervised(ds, 1.0)
    assert len(all_) == 500 and len(empty) == 0
    with pytest.raises(ValueError, match="frac must lie in \\[0, 1\\], got 1.5"):
        semi_supervised(ds, 1.5)


def test_subsets_compose(ds):
    sub = ds.subset([10, 20, 30, 40]).subset([3, 1])
    np.testing.assert_array_equal(sub.images, ds.images[[40, 20]])
    np.testing.assert_array_equal(sub.labels, ds.labels[[40, 20]])
    with pytest.raises(IndexError, match="\\[0, 4\\)"):
        ds.subset([10, 20, 30, 40]).subset([4])
