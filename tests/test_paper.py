"""The paper's baselines (paper/) on tiny settings: M2's terms and gradients, both command lines end to
end, the labels-only classifier fitting its images, the majority guess, and the product never
importing paper/."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paper import labels_only, m2
from paper.common import label_accuracy, semi_supervised_data
from train.config import load_recipe, override
from train.trainer import load_data

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(limit=120, val_limit=0, eval_limit=50, channels=[8, 8, 8, 8], hidden_dim=16, latent_dim=20, epochs=1,
            batch_size=16, fit_style_prior=0)
TINY_FLAGS = ["--recipe", "synthetic-faces", "--seed", "0", "--limit", "120", "--eval-limit", "50", "--batch-size", "16",
              "--set", "channels=[8,8,8,8]", "--set", "hidden_dim=16", "--set", "latent_dim=20", "--set", "val_limit=0",
              "--set", "fit_style_prior=0", "--threads", "1", "--quiet"]
METRIC_KEYS = {"mean_accuracy", "per_label_accuracy", "num_test_images", "train_seconds", "labelled", "unlabelled",
               "epochs"}


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def tiny(**changes):
    return override(load_recipe("synthetic-faces"), {**TINY, **changes})


def tiny_m2() -> m2.M2:
    torch.manual_seed(0)
    model = m2.build(tiny(), [f"label{i}" for i in range(15)])
    model.set_label_prior(torch.linspace(0.05, 0.9, 15))
    return model


def test_m2_terms_are_finite_and_the_unlabelled_term_trains_the_classifier():
    model, g = tiny_m2(), torch.Generator().manual_seed(0)
    x, y = torch.rand(6, 3, 64, 64, generator=g), (torch.rand(6, 15, generator=g) < 0.3).float()
    sup = m2.labelled(model, x, y, alpha=300.0, generator=g)
    unsup = m2.unlabelled(model, x, generator=g)
    assert sup.bound.shape == unsup.bound.shape == (6,)
    assert torch.isfinite(sup.loss) and torch.isfinite(unsup.loss)
    assert model.z_dim == 5 and model.decoder.project[0].in_features == 20  # [z, y] has latent_dim entries

    params = list(model.classifier.parameters())
    total = torch.autograd.grad(m2.unlabelled(model, x, generator=torch.Generator().manual_seed(1)).loss, params)
    kl_only = torch.autograd.grad(m2.label_kl(model.classifier_logits(x), model.label_prior).mean(), params)
    # the part that reaches q(y|x) through the relaxed labels (reconstruction and q(z|x,y)), not the KL alone
    through_labels = torch.cat([(a - b).flatten() for a, b in zip(total, kl_only)])
    assert through_labels.norm() > 1e-3 * torch.cat([a.flatten() for a in total]).norm() > 0
    assert params[0] is model.classifier.body[0].weight and total[0].abs().sum() > 0  # the trunk too, not only the head


def test_relaxed_labels_keep_q_y_and_label_kl_is_exact():
    logits = torch.tensor([-2.0, 0.0, 1.5]).expand(20000, 3)
    y = m2.relaxed_labels(logits, 0.5, generator=torch.Generator().manual_seed(0))
    assert ((y >= 0) & (y <= 1)).all() and ((y > 0.05) & (y < 0.95)).any()  # relaxed: not only 0 and 1
    # P(y~ > 1/2) = P(a + logistic noise > 0) = sigmoid(a) at every temperature
    assert torch.allclose((y > 0.5).float().mean(0), torch.sigmoid(logits[0]), atol=0.015)
    prior = torch.tensor([0.1, 0.5, 0.8])
    want = torch.distributions.kl_divergence(torch.distributions.Bernoulli(logits=logits[:1]),
                                             torch.distributions.Bernoulli(probs=prior[None])).sum(-1)
    assert torch.allclose(m2.label_kl(logits[:1], prior), want, atol=1e-5)


def test_m2_command_line_end_to_end_writes_a_model_that_rebuilds(tmp_path):
    assert m2.main([*TINY_FLAGS, "--sup-frac", "0.5", "--epochs", "1", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and 0.0 <= metrics["mean_accuracy"] <= 1.0
    assert (metrics["labelled"], metrics["unlabelled"], metrics["num_test_images"]) == (60, 60, 50)
    assert len(metrics["per_label_accuracy"]) == 15
    model = m2.load_m2(tmp_path)  # config.json + model.safetensors rebuild it, and it scores the same
    test = load_data(tiny(), "test", 50)
    acc = label_accuracy(lambda x: model.classifier_logits(x) > 0, test.images, test.labels, device=torch.device("cpu"))
    assert float(acc.mean()) == pytest.approx(metrics["mean_accuracy"])


@pytest.mark.parametrize("main", [m2.main, lambda argv: labels_only.main([*argv, "--steps", "2"])])
def test_errors_are_one_line_with_status_2(main, capsys):
    assert main([*TINY_FLAGS, "--sup-frac", "0"]) == 2  # no labelled image
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "sup_frac" in err[0]
    assert main([*TINY_FLAGS, "--recipe", "no-such-recipe"]) == 2


def test_labels_only_fits_its_labelled_images():
    config = tiny(sup_frac=0.134, channels=[16] * 4, hidden_dim=32, lr=3e-3)  # wide enough to fit in 200 steps
    _, labelled, _ = semi_supervised_data(config)  # 16 faces
    # dropout off: at this width it slows fitting past the test's few steps (flips and moves stay on)
    model = labels_only.fit_labels_only(config, labelled.images, labelled.labels, steps=200,
                                        device=torch.device("cpu"), progress=False, dropout=0.0)
    train_acc = label_accuracy(lambda x: model(x) > 0, labelled.images, labelled.labels, device=torch.device("cpu"))
    majority = (labelled.labels == labels_only.majority_labels(labelled.labels)).mean(0)
    assert train_acc.mean() > majority.mean() + 0.5 * (1 - majority.mean())  # most of the way from the guess to 1


def test_augment_only_flips_and_moves_each_image():
    x = torch.rand(6, 3, 8, 8)
    y = labels_only.augment(x, max_shift=2, generator=torch.Generator().manual_seed(1))
    for i in range(6):
        crops = [F.pad(base[None], (2, 2, 2, 2), mode="replicate")[0, :, dy:dy + 8, dx:dx + 8]
                 for base in (x[i], x[i].flip(-1)) for dy in range(5) for dx in range(5)]
        assert any(torch.equal(c, y[i]) for c in crops)
    assert not torch.equal(y, x)


def test_labels_only_command_line_reports_the_same_keys(tmp_path):
    assert labels_only.main([*TINY_FLAGS, "--sup-frac", "0.5", "--steps", "3", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["steps"] == 3 and 0.0 <= metrics["mean_accuracy"] <= 1.0
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()


def test_majority_is_each_labels_most_frequent_labelled_value():
    assert labels_only.majority_labels(np.array([[1, 0, 1], [1, 1, 0], [0, -1, -1]])).tolist() == [1, 0, 0]
    config = tiny(sup_frac=0.25)
    _, labelled, _ = semi_supervised_data(config)
    metrics = labels_only.majority_metrics(config)
    guess = (labelled.labels.mean(0) > 0.5).astype(int)
    assert list(metrics["majority"].values()) == guess.tolist()
    test = load_data(config, "test", 50)
    assert metrics["mean_accuracy"] == pytest.approx(float((test.labels == guess).mean()))
    assert METRIC_KEYS <= set(metrics)


def test_the_product_never_imports_paper():
    sources = [*sorted((ROOT / "ccvae").rglob("*.py")), *sorted(ROOT.glob("app*.py"))]
    assert len(sources) > 5
    for path in sources:
        assert not re.search(r"^\s*(from|import)\s+paper\b", path.read_text(), re.M), path
    code = "import sys, ccvae; sys.exit(any(m == 'paper' or m.startswith('paper.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
