"""The bundled model: loads strictly, names the app's labels, and keeps its measured quality.

The floors are the model card's figures (measured on 5,000 test faces) less a margin for the
smaller sample here (300 faces, the oracle judging 100: on this sample the model measures PSNR
27.34, intervention success 0.933, with the exclusive labels cleared as the app edits 0.971,
conditional accuracy 0.937, 0.953 with labels drawn as the app's random faces are). The means
are asserted at their measured level less that margin, so a regression still fails.
"""
from pathlib import Path

import pytest

from ccvae import CCVAE
from train import evaluate

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-faces"


@pytest.fixture(scope="module")
def model():
    return CCVAE.from_pretrained(BUNDLED).eval()


def test_loads_with_the_labels_the_app_shows(model):
    assert model.label_names == [
        "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Male", "Mouth_Slightly_Open",
        "Narrow_Eyes", "No_Beard", "Pale_Skin", "Smiling", "Wearing_Earrings", "Wearing_Hat", "Wearing_Necktie"]
    assert model.image_size == 64 and model.latent_dim == 45
    assert len(list((BUNDLED / "examples").glob("*.png"))) >= 8
    assert sum(f.stat().st_size for f in BUNDLED.rglob("*") if f.is_file()) < 25 * 2**20
    # the pairs never together in its 50,000 training labels, which the app keeps exclusive
    assert model.config["exclusive_labels"] == [
        ["Bald", "Bangs"], ["Bald", "Wearing_Hat"], ["Black_Hair", "Blond_Hair"], ["Black_Hair", "Brown_Hair"],
        ["Blond_Hair", "Brown_Hair"]]


@pytest.fixture(scope="module")
def metrics(model, tmp_path_factory):
    import os

    os.environ.setdefault("CCVAE_CACHE", str(tmp_path_factory.mktemp("cache")))
    return evaluate.evaluate(model, "synthetic", limit=300, n_oracle=100)


def test_accuracy_and_reconstruction(metrics):
    assert metrics["mean_accuracy"] >= 0.98
    assert min(metrics["per_label_accuracy"].values()) >= 0.95
    assert metrics["psnr"] >= 27.0


def test_interventions_are_clean_and_work_for_the_strong_labels(metrics):
    assert metrics["intervention_leakage_mean"] <= 0.02
    success = metrics["intervention_success"]
    strong = ("Bangs", "Eyeglasses", "Male", "Mouth_Slightly_Open", "Narrow_Eyes", "No_Beard", "Pale_Skin",
              "Smiling", "Wearing_Earrings", "Wearing_Hat", "Wearing_Necktie")
    for label in strong:
        assert success[label] >= 0.88, (label, success[label])
    # trained with precedence over its exclusive partners, the plain edit mostly works for Black_Hair
    # too (full test set 0.854, here 0.86); a plain Bald edit under a hat or bangs is a face the data
    # never shows (here 0.835)
    assert success["Black_Hair"] >= 0.82, success["Black_Hair"]
    # the edits the data can show work for every label (hair colours and Bald included)
    for label, rate in metrics["intervention_success_feasible"].items():
        assert rate >= 0.88, (label, rate)
    assert metrics["intervention_success_mean"] >= 0.92
    # the app's edit (editing.intervene) lifts the labels it clears for and no other
    consistent = metrics["intervention_success_consistent"]
    for label in ("Blond_Hair", "Brown_Hair"):  # the colours Black_Hair wins over in the plain edit
        assert consistent[label] >= 0.88 and consistent[label] >= success[label] + 0.02, (label, consistent[label])
    # clearing Bangs and a hat, the other colours (full test set: 0.899, 0.870; here 0.905, 0.87)
    assert consistent["Bald"] >= 0.85 and consistent["Black_Hair"] >= 0.82, consistent
    assert all(consistent[label] == success[label] for label in strong if label not in ("Bangs", "Wearing_Hat"))
    assert metrics["intervention_success_consistent_mean"] >= 0.96
    assert metrics["intervention_success_feasible_mean"] >= 0.96
    assert metrics["conditional_accuracy"] >= 0.92
    # the app's random faces: labels never two exclusive ones (full test set: 0.957; here 0.953)
    assert metrics["conditional_accuracy_compatible"] >= 0.93


def test_resampling_a_characteristic_varies_the_image(metrics):
    for label, d in metrics["diversity"].items():
        assert d["variance"] > 0, label
    # a new variant of a characteristic the face has (z_i drawn where the classifier reads it), its
    # kinds in z_s redrawn too: the oracle still sees it (measured on these 100 faces: 0.938 to 1.0
    # for every label but Wearing_Earrings, 0.887 of 20 faces' resamples, 0.936 over the 5,000)
    floor = {"Wearing_Earrings": 0.83}
    for label, d in metrics["diversity"].items():
        assert d["oracle_present"] >= floor.get(label, 0.9), (label, d["oracle_present"])
        assert d["faces_with_label"] > 0, label
