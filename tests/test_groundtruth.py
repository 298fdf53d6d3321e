"""Ground-truth metrics of the synthetic faces (train.groundtruth), with stand-in oracles whose
readings are known, so each rate has an exact expected value."""
import numpy as np
import pytest
import torch

from ccvae.distributions import DiagonalGaussian
from conftest import tiny_model
from train.data.labels import pair_support
from train.groundtruth import active_units, feasible_interventions, oracle_metrics


def test_feasible_interventions_exclude_combinations_the_data_never_shows():
    # labels: a, b exclusive (like two hair colours), c free; the last row has c unknown
    y = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [0, 1, -1]])
    support = pair_support(y)
    assert not support[0, 1, 1, 1] and support[0, 1, 1, 0] and support[2, 1, 0, 1]
    ok = feasible_interventions(y, support)
    assert ok.shape == (5, 3, 2)
    assert not ok[1, 0, 1]  # a = 1 on a face with b = 1: never seen
    assert ok[1, 0, 0] and ok[2, 0, 1]  # a = 0 keeps it as it is; a = 1 when b = 0 is fine
    assert ok[0, 2, 1] and ok[0, 2, 0]  # c is free
    assert not ok[4, 2].any()  # c unknown in that row: nothing to score
    assert ok[4, 0, 0] and not ok[4, 0, 1]


def test_active_units_skip_collapsed_latents():
    z = torch.zeros(50, 4)
    z[:, 1] = torch.linspace(-2, 2, 50)
    z[:, 3] = torch.linspace(1, -1, 50)
    assert active_units(z).tolist() == [1, 3]
    assert active_units(torch.zeros(50, 3)).tolist() == [0, 1, 2]  # none active: all


def test_diversity_present_counts_the_faces_that_show_the_label():
    """oracle_present: of the resamples of faces that have label i, the share the oracle still
    reads as i; oracle_present_all_faces: the same over every face."""
    model = tiny_model().eval()
    n, R = 12, 4
    labels = np.array([[i % 2, i % 3 == 0, 1] for i in range(n)], dtype=np.int64)  # (n, 3)

    class ReadsTheTruthOfResamples(torch.nn.Module):
        """Reads label j as present exactly on the resamples of faces whose true label j is 1
        (recognised by their batch size, n * R); reads nothing elsewhere."""
        label_names = list(model.label_names)

        def __init__(self):
            super().__init__()
            self.where = torch.nn.Parameter(torch.zeros(1))  # the oracle's device

        def predict(self, x):
            if x.shape[0] == n * R:
                return torch.as_tensor(labels, dtype=torch.bool).repeat_interleave(R, 0)
            return torch.zeros(x.shape[0], 3, dtype=torch.bool)

    images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    m = oracle_metrics(model, ReadsTheTruthOfResamples(), images, n=n, resamples=R, batch_size=n, labels=labels)
    for j, name in enumerate(model.label_names):
        d = m["diversity"][name]
        assert d["faces_with_label"] == int(labels[:, j].sum())
        assert d["oracle_present"] == 1.0, name
        assert d["oracle_present_all_faces"] == pytest.approx(labels[:, j].mean()), name
    # without labels there is no way to tell which faces show it: every face counts
    m = oracle_metrics(model, ReadsTheTruthOfResamples(), images, n=n, resamples=R, batch_size=n)
    assert m["diversity"]["Eyeglasses"]["oracle_present"] == pytest.approx(0.5)


def test_reconstruction_present_counts_the_reconstructions_that_keep_the_label():
    """reconstruction_present: of the faces that show label i, the share whose plain
    reconstruction (the oracle's first reading of a batch) still shows it."""
    model = tiny_model().eval()
    n = 12
    labels = np.array([[i % 2, i % 3 == 0, 1] for i in range(n)], dtype=np.int64)  # (n, 3)
    kept = np.arange(n) % 4 != 0  # the reconstructions of rows 0, 4, 8 lose every label

    class LosesSomeInReconstruction(torch.nn.Module):
        label_names = list(model.label_names)

        def __init__(self):
            super().__init__()
            self.where = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def predict(self, x):
            self.calls += 1
            truth = torch.as_tensor(labels[:x.shape[0]] * kept[:x.shape[0], None], dtype=torch.bool)
            return truth if self.calls == 1 else torch.zeros(x.shape[0], 3, dtype=torch.bool)

    images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    m = oracle_metrics(model, LosesSomeInReconstruction(), images, n=n, resamples=2, batch_size=n, labels=labels)
    for j, name in enumerate(model.label_names):
        has = labels[:, j] == 1
        assert m["reconstruction_present"][name] == pytest.approx(kept[has].mean()), name
    assert m["reconstruction_present"]["Male"] == pytest.approx(9 / 12)  # label 2 is on every face; rows 0, 4, 8 lose it


def test_consistent_interventions_clear_the_exclusive_label_the_plain_ones_keep():
    """An oracle that, like the decoder, draws one hair colour when both latents say present
    (black wins): the plain edit Brown -> 1 fails on black-haired faces, editing.intervene's
    edit (black cleared) succeeds; labels without exclusive partners score the same both ways.
    Likewise conditional generation: y from the factorised p(y) often asks for both colours, y
    drawn compatible never does."""
    model = tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling"), exclusive_labels=[["Black_Hair", "Brown_Hair"]])
    model.eval()
    with torch.no_grad():  # q(y_i = 1 | z_i) = sigmoid(z_i); p(z_i | y_i = v) at -2 and 2, narrow
        model.prior_loc.copy_(torch.tensor([[-2.0] * 3, [2.0] * 3]))
        model.prior_raw_scale.fill_(-10.0)
    model.set_label_prior([0.9, 0.9, 0.5])  # the factorised p(y) draws both colours 81 % of the time
    n = 8
    z = torch.zeros(n, model.latent_dim)
    z[:, 0] = torch.tensor([2.0, -2.0] * 4)  # black-haired faces, then brown-haired ones
    z[:, 1] = -z[:, 0]
    z[:, 2] = torch.tensor([2.0, 2.0, -2.0, -2.0] * 2)
    model.encode = lambda x: DiagonalGaussian(z[:x.shape[0]], torch.ones(x.shape[0], model.latent_dim))

    def decode(zz):  # pixel (0, 0, j) shows whether latent j reads present
        img = torch.zeros(zz.shape[0], 3, 16, 16)
        img[:, 0, 0, :3] = (zz[:, :3] > 0).float()
        return img

    model.decode = decode

    class OneColour(torch.nn.Module):
        label_names = list(model.label_names)

        def __init__(self):
            super().__init__()
            self.where = torch.nn.Parameter(torch.zeros(1))

        def predict(self, x):
            seen = x[:, 0, 0, :3] > 0.5
            seen[:, 1] &= ~seen[:, 0]  # both colours drawn as black
            return seen

    labels = (z[:, :3] > 0).long().numpy()
    images = np.zeros((n, 16, 16, 3), dtype=np.uint8)
    m = oracle_metrics(model, OneColour(), images, n=n, resamples=2, batch_size=n, labels=labels)
    assert m["intervention_success"] == {"Black_Hair": 1.0, "Brown_Hair": 0.75, "Smiling": 1.0}
    assert m["intervention_success_consistent"] == {"Black_Hair": 1.0, "Brown_Hair": 1.0, "Smiling": 1.0}
    assert m["intervention_success_consistent_mean"] == 1.0
    # split by direction: adding Brown to the four black-haired faces fails plain, succeeds cleared;
    # adding Black to the brown-haired ones wins anyway; removals all succeed
    assert m["intervention_success_add"] == {"Black_Hair": 1.0, "Brown_Hair": 1.0, "Smiling": 1.0}
    assert m["intervention_success_remove"] == {"Black_Hair": 1.0, "Brown_Hair": 1.0, "Smiling": 1.0}
    assert m["conditional_accuracy_per_label"]["Brown_Hair"] < 0.5  # drawn black whenever both were asked
    assert m["conditional_accuracy_per_label"]["Black_Hair"] == m["conditional_accuracy_per_label"]["Smiling"] == 1.0
    assert m["conditional_accuracy_compatible_per_label"] == {"Black_Hair": 1.0, "Brown_Hair": 1.0, "Smiling": 1.0}
    assert m["conditional_accuracy_compatible"] == 1.0

    class StickySmile(OneColour):  # a decoder that cannot take a smile away
        def predict(self, x):
            seen = super().predict(x)
            seen[:, 2] = True
            return seen

    m = oracle_metrics(model, StickySmile(), images, n=n, resamples=2, batch_size=n, labels=labels)
    assert m["intervention_success"]["Smiling"] == 0.5  # every "present" edit, no "absent" one
    assert m["intervention_success_add"]["Smiling"] == 1.0  # the four faces without a smile gain one
    assert m["intervention_success_remove"]["Smiling"] == 0.0  # the four smiling ones keep it
    assert m["intervention_success_remove"]["Brown_Hair"] == 1.0
    every_face_smiles = labels.copy()
    every_face_smiles[:, 2] = 1
    m = oracle_metrics(model, StickySmile(), images, n=n, resamples=2, batch_size=n, labels=every_face_smiles)
    assert "Smiling" not in m["intervention_success_add"]  # no face to add it to: no rate, not a false 0
    assert m["intervention_success_remove"]["Smiling"] == 0.0
    plain = tiny_model(labels=("Black_Hair", "Brown_Hair", "Smiling")).eval()
    m = oracle_metrics(plain, OneColour(), images, n=n, resamples=2, batch_size=n, labels=labels)
    assert "intervention_success_consistent" not in m and "conditional_accuracy_compatible" not in m
