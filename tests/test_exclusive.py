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


def test_exclusive_pairs_need_enough_faces_to_tell_never_from_rare():
    from train.evaluate import exclusive_pairs

    rng = np.random.default_rng(0)
    n = 400
    hair = rng.integers(0, 3, n)  # one of three colours on every face
    y = np.stack([hair == 0, hair == 1, hair == 2, rng.random(n) < 0.02, rng.random(n) < 0.3], 1).astype(np.int64)
    y[:, 3] &= y[:, 4] == 0  # label 3 (rare) never with label 4: 400 * 0.02 * 0.3 = 2.4 expected, too few to tell
    names = ["a", "b", "c", "rare", "common"]
    assert exclusive_pairs(y, names) == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert ["rare", "common"] in exclusive_pairs(y, names, min_expected=1.0)
    assert exclusive_pairs(y[:20], names) == []  # 20 * (1/3)**2 = 2.2 expected: not enough to call them exclusive
    y[:, 4][:50] = -1  # unknown cells count for neither side
    assert exclusive_pairs(y, names) == [["a", "b"], ["a", "c"], ["b", "c"]]


def test_write_config_stores_the_pairs_and_keeps_the_weights(tmp_path):
    import torch

    from ccvae import CCVAE
    from conftest import tiny_model
    from train.exclusive import write_config

    model = tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling"))
    model.save_pretrained(tmp_path / "m")
    card = (tmp_path / "m" / "README.md").read_text()
    hair = np.arange(300) % 2
    labels = np.stack([hair, 1 - hair, np.arange(300) % 3 == 0], 1).astype(np.int64)
    assert write_config(tmp_path / "m", labels) == [["Black_Hair", "Brown_Hair"]]
    loaded = CCVAE.from_pretrained(tmp_path / "m")
    assert loaded.config["exclusive_labels"] == [["Black_Hair", "Brown_Hair"]]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert (tmp_path / "m" / "README.md").read_text() == card  # the model card is left alone
