"""The bound that exclusive labels put on the plain intervention metric (train.exclusive)."""
import numpy as np
import pytest

from train.exclusive import contradiction_bound, exclusive_groups, precedence_bounds


def test_groups_are_pairwise_exclusive():
    ex = np.zeros((5, 5), dtype=bool)
    for i, j in [(0, 1), (0, 2), (1, 2), (3, 4)]:
        ex[i, j] = ex[j, i] = True
    assert exclusive_groups(ex) == [[0, 1, 2], [3, 4]]
    ex[1, 2] = ex[2, 1] = False  # 1 and 2 can meet: 0 excludes both, but they are no group of three
    assert exclusive_groups(ex) == [[0, 1], [3, 4]]


def test_bounds_count_the_requests_a_one_colour_decoder_must_fail():
    # 10 faces: 4 with label 0, 3 with label 1, 3 with neither; labels 0 and 1 never together
    y = np.zeros((10, 2), dtype=np.int64)
    y[:4, 0] = 1
    y[4:7, 1] = 1
    orders = dict(precedence_bounds(y, [0, 1]))
    # 0 drawn over 1: adding 1 to the 4 faces with 0 fails, 4 of label 1's 20 requests
    assert orders[(0, 1)] == [1.0, pytest.approx(1 - 4 / 20)]
    assert orders[(1, 0)] == [pytest.approx(1 - 3 / 20), 1.0]
    fails, mean, worst = contradiction_bound(y, [0, 1])
    assert fails == 3 and mean == pytest.approx(1 - 3 / 40) and worst == pytest.approx(1 - 1.5 / 20)
