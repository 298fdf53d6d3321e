"""The training CLI end to end on a few hundred synthetic faces (tiny settings, CPU)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ccvae import CCVAE, objective
from train import evaluate, publish, trainer

ROOT = Path(__file__).resolve().parents[1]
BASE = ["--dataset", "synthetic", "--limit", "120", "--val-limit", "40", "--batch-size", "40", "--k", "8",
        "--latent-dim", "20", "--lr", "1e-3", "--threads", "1"]
QUICK = [*BASE, "--no-figures", "--no-eval"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def run(out: Path, *extra: str) -> int:
    return trainer.cli([*QUICK, "--out", str(out), *extra])


def test_one_epoch_writes_a_loadable_model_with_card_and_figures(tmp_path):
    assert trainer.cli([*BASE, "--no-eval", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    run_dir = tmp_path / "run"
    model = CCVAE.from_pretrained(run_dir / "model")
    assert "Eyeglasses" in model.label_names and model.latent_dim == 20
    card = (run_dir / "model" / "README.md").read_text()
    assert "f = 1.0" in card and "Eyeglasses" in card and "traversal.png" in card
    assert (run_dir / "model" / "traversal.png").stat().st_size > 1000
    assert {p.name for p in (run_dir / "figures").iterdir()} == {
        "epoch001_reconstruction.png", "epoch001_traversal.png", "epoch001_diversity.png"}
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 1 and 0.0 <= log[0]["val_accuracy"] <= 1.0 and "sup_loss" in log[0]
    # the label prior holds the labelled frequencies
    assert not torch.allclose(model.label_prior, torch.full_like(model.label_prior, 0.5))


def test_intervention_weight_applies_from_the_start_epoch_on(tmp_path, capsys):
    gamma = ["--intervention-weight", "10", "--intervention-batch", "4"]
    assert run(tmp_path / "late", "--epochs", "2", *gamma, "--intervention-start", "1") == 0
    log = [json.loads(line) for line in (tmp_path / "late" / "log.jsonl").read_text().splitlines()]
    assert "sup_intervention_accuracy" not in log[0]  # epoch 1: Eq. 1 alone
    assert 0.0 <= log[1]["sup_intervention_accuracy"] <= 1.0  # epoch 2: the edits are trained
    assert trainer.intervention_weight(trainer.parse_args([*QUICK, "--out", "x", *gamma, "--intervention-start", "1.5"]), 1.49) == 0
    assert run(tmp_path / "any", "--epochs", "1", *gamma, "--intervention-flips", "all") == 0
    assert run(tmp_path / "consistent", "--epochs", "1", *gamma, "--intervention-flips", "consistent") == 0
    assert run(tmp_path / "latent", "--epochs", "1", *gamma, "--intervention-judge", "latent") == 0
    log = [json.loads(line) for line in (tmp_path / "latent" / "log.jsonl").read_text().splitlines()]
    assert log[0]["sup_intervention_latent_error"] > 0 and 0.0 <= log[0]["sup_intervention_accuracy"] <= 1.0
    assert run(tmp_path / "bad", "--epochs", "1", *gamma, "--intervention-start", "-1") == 2
    assert "--intervention-start must be an epoch >= 0, got -1.0" in capsys.readouterr().err


def test_intervention_focus_steers_the_draw_by_the_logged_miss_rates_and_resumes_with_them(tmp_path, capsys, monkeypatch):
    seen, supervised = [], objective.supervised
    monkeypatch.setattr(objective, "supervised", lambda *a, **kw: seen.append(kw["intervention_focus"]) or supervised(*a, **kw))
    gamma = ["--intervention-weight", "10", "--intervention-batch", "4", "--intervention-start", "1"]
    assert run(tmp_path / "focus", "--epochs", "2", *gamma, "--intervention-focus", "0.5") == 0
    assert seen[:3] == [None] * 3  # epoch 1: no term, nothing to steer
    torch.testing.assert_close(seen[3], torch.ones(len(seen[3])))  # the first edits: nothing drawn yet, uniform
    assert all(w.min() >= 0.5 and w.mean().item() == pytest.approx(1.0) for w in seen[4:])
    assert not torch.allclose(seen[-1], seen[3])  # then the misses steer it
    log = [json.loads(line) for line in (tmp_path / "focus" / "log.jsonl").read_text().splitlines()]
    assert "intervention_miss_rate" not in log[0]
    rates = log[1]["intervention_miss_rate"]
    assert len(rates) == len(seen[3]) and all(0.0 <= r <= 1.0 for r in rates.values())
    state = json.loads((tmp_path / "focus" / "state" / "training_state.json").read_text())
    stats = torch.tensor(state["counters"]["edit_stats"])
    assert stats.shape == (2, len(seen[3])) and 0 < stats[0].sum() <= 3 * 4  # decayed counts of the 3 steps' edits
    seen.clear()
    assert run(tmp_path / "focus", "--epochs", "3", *gamma, "--intervention-focus", "0.5", "--resume") == 0
    torch.testing.assert_close(seen[0], objective.edit_focus(stats, 0.5))  # the resumed run goes on from the counts
    monkeypatch.setattr(objective, "supervised", supervised)
    assert run(tmp_path / "bad", "--epochs", "1", *gamma, "--intervention-focus", "2") == 2
    assert "--intervention-focus must lie in [0, 1], got 2.0" in capsys.readouterr().err


def test_intervention_precedence_lifts_the_exclusive_pairs_one_way_and_bad_labels_are_named(tmp_path, capsys, monkeypatch):
    seen, supervised = [], objective.supervised
    monkeypatch.setattr(objective, "supervised", lambda *a, **kw: seen.append(kw["intervention_exclusive"]) or supervised(*a, **kw))
    monkeypatch.setattr(evaluate, "exclusive_pairs", lambda labels, names: [["Bald", "Bangs"], ["Black_Hair", "Blond_Hair"]])
    gamma = ["--intervention-weight", "10", "--intervention-batch", "4"]
    assert run(tmp_path / "first", "--epochs", "1", *gamma, "--intervention-precedence", "Bald") == 0
    names = CCVAE.from_pretrained(tmp_path / "first" / "model").label_names
    ex = seen[-1].cpu()
    at = lambda a, b: bool(ex[names.index(a), names.index(b)])  # noqa: E731  (row: the label added)
    assert not at("Bald", "Bangs") and at("Bangs", "Bald")  # Bald is drawn onto bangs, never the reverse
    assert at("Black_Hair", "Blond_Hair") and at("Blond_Hair", "Black_Hair")  # unlisted pairs stay both ways
    assert ex.sum() == 3
    monkeypatch.setattr(objective, "supervised", supervised)
    assert run(tmp_path / "bad", "--epochs", "1", *gamma, "--intervention-precedence", "Baldness") == 2
    assert "--intervention-precedence: unknown labels ['Baldness']" in capsys.readouterr().err
    assert run(tmp_path / "all", "--epochs", "1", *gamma, "--intervention-precedence", "Bald", "--intervention-flips", "all") == 2
    assert "--intervention-flips all respects none" in capsys.readouterr().err
    assert run(tmp_path / "twice", "--epochs", "1", *gamma, "--intervention-precedence", "Bald", "Bald") == 2
    assert "--intervention-precedence lists a label twice: ['Bald', 'Bald']" in capsys.readouterr().err


def test_style_kl_warmup_ramps_beta_from_zero_and_bad_values_are_named(tmp_path, capsys, monkeypatch):
    seen, supervised = [], objective.supervised
    monkeypatch.setattr(objective, "supervised", lambda *a, **kw: seen.append(kw["style_kl_weight"]) or supervised(*a, **kw))
    assert run(tmp_path / "warm", "--epochs", "2", "--style-kl-warmup", "2") == 0
    assert seen == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])  # what the loss got, step by step
    log = [json.loads(line) for line in (tmp_path / "warm" / "log.jsonl").read_text().splitlines()]
    assert [r["style_kl_weight"] for r in log] == pytest.approx([2 / 6, 5 / 6])  # 3 batches an epoch
    monkeypatch.setattr(objective, "supervised", supervised)
    args = trainer.parse_args([*QUICK, "--out", "x", "--style-kl-weight", "2", "--style-kl-warmup", "4"])
    assert [trainer.style_kl_weight(args, t) for t in (0, 1, 2, 4, 9)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert trainer.style_kl_weight(trainer.parse_args([*QUICK, "--out", "x"]), 0) == 1.0  # off by default
    assert run(tmp_path / "bad", "--epochs", "1", "--style-kl-warmup", "-1") == 2
    assert "--style-kl-warmup must be a number of epochs >= 0, got -1.0" in capsys.readouterr().err
    assert run(tmp_path / "bad2", "--epochs", "1", "--style-kl-weight", "-0.5") == 2
    assert "--style-kl-weight must be >= 0, got -0.5" in capsys.readouterr().err


def test_schedule_minutes_ends_the_whole_schedule_in_time_and_changes_nothing_when_time_is_ample(tmp_path, capsys, monkeypatch):
    args = trainer.parse_args([*QUICK, "--out", "x", "--epochs", "10", "--schedule-minutes", "2"])
    # position: the epochs done, or the fraction of the 2 minutes elapsed times 10 epochs if that is further
    assert [trainer.schedule_position(args, e, s) for e, s in ((3, 0), (3, 60), (3, 12), (0, 240))] == [3, 5, 3, 20]
    assert trainer.schedule_position(trainer.parse_args([*QUICK, "--out", "x"]), 3, 1e9) == 3  # off by default
    # a machine far too slow for the plan (the trainer's clock moves a minute at every reading): the
    # first step finds the minute used up, so it already has the cosine's final rate and the late
    # intervention term, and the run stops after it, saved and logged like any run
    clock = iter(range(0, 10**6, 60))
    gamma = ["--intervention-weight", "10", "--intervention-batch", "4", "--intervention-start", "4"]
    cosine = ["--lr-schedule", "cosine", "--min-lr-ratio", "0.05"]
    with monkeypatch.context() as m:  # (the autouse fixture's data cache stays patched)
        m.setattr(trainer, "time", types.SimpleNamespace(time=lambda: next(clock)))
        assert run(tmp_path / "slow", "--epochs", "5", *cosine, *gamma, "--schedule-minutes", "1") == 0
    assert "the schedule of 1.0 minutes ended in epoch 1 at batch 1 of 3: 0.33 of 5 epochs done" in capsys.readouterr().err
    log = [json.loads(line) for line in (tmp_path / "slow" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["step"] == 1 and log[0]["epoch"] == pytest.approx(1 / 3)
    assert log[0]["lr"] == pytest.approx(1e-3 * 0.05) and log[0]["schedule_position"] == 5
    assert 0.0 <= log[0]["sup_intervention_accuracy"] <= 1.0
    state = json.loads((tmp_path / "slow" / "state" / "training_state.json").read_text())
    assert state["counters"] == {**state["counters"], "epoch": 0, "batch": 1, "step": 1}
    # the time budget stops the same way and says as plainly how far the run went
    clock = iter(range(0, 10**6, 60))
    with monkeypatch.context() as m:
        m.setattr(trainer, "time", types.SimpleNamespace(time=lambda: next(clock)))
        assert run(tmp_path / "capped", "--epochs", "5", "--max-minutes", "1.5") == 0
    assert "time budget of 1.5 minutes reached in epoch 1 at batch 1 of 3: 0.33 of 5 epochs done" in capsys.readouterr().err
    # ample time: the epochs lead, so the run is the same as one without the option, step for step
    assert run(tmp_path / "ample", "--epochs", "2", *cosine, "--schedule-minutes", "600") == 0
    assert run(tmp_path / "plain", "--epochs", "2", *cosine) == 0
    a, b = _weights(tmp_path / "ample"), _weights(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "ample" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and [r["schedule_position"] for r in log] == pytest.approx([2 / 3, 5 / 3])
    assert run(tmp_path / "bad", "--epochs", "1", "--schedule-minutes", "0") == 2
    assert "--schedule-minutes must be a positive number of minutes, got 0.0" in capsys.readouterr().err


def test_refine_channels_build_the_trained_decoder_and_bad_values_are_named(tmp_path, capsys):
    assert run(tmp_path / "refined", "--epochs", "1", "--refine-channels", "4") == 0
    model = CCVAE.from_pretrained(tmp_path / "refined" / "model")
    assert model.config["refine_channels"] == 4 and model.decoder.body[-1].in_channels == 4
    assert run(tmp_path / "bad", "--epochs", "1", "--refine-channels", "-2") == 2
    assert "--refine-channels must be 0 (the paper's decoder) or positive, got -2" in capsys.readouterr().err


def test_hidden_dim_sets_both_bottlenecks_and_is_saved(tmp_path, capsys):
    assert run(tmp_path / "wide", "--epochs", "1", "--hidden-dim", "48") == 0
    model = CCVAE.from_pretrained(tmp_path / "wide" / "model")
    assert model.config["hidden_dim"] == 48
    assert model.encoder.loc.in_features == 48 and model.decoder.project[0].out_features == 48
    assert run(tmp_path / "bad", "--epochs", "1", "--hidden-dim", "0") == 2
    assert "--hidden-dim must be a positive width, got 0" in capsys.readouterr().err


def test_channels_widen_encoder_and_decoder_and_are_saved(tmp_path, capsys):
    assert run(tmp_path / "wide", "--epochs", "1", "--channels", "16", "8", "8", "8") == 0
    model = CCVAE.from_pretrained(tmp_path / "wide" / "model")
    assert model.config["channels"] == [16, 8, 8, 8]
    assert model.encoder.body[0].out_channels == 16  # the first conv, at full resolution
    assert model.decoder.body[-1].in_channels == 16   # the last transposed conv mirrors it
    assert run(tmp_path / "bad", "--epochs", "1", "--channels", "16", "0", "8", "8") == 2
    assert "--channels must be positive widths, got [16, 0, 8, 8]" in capsys.readouterr().err
    assert run(tmp_path / "short", "--epochs", "1", "--channels", "16", "8") == 2
    err = capsys.readouterr().err
    assert "64x64 images need 4 conv channels, got [16, 8]" in err and "Traceback" not in err


def test_decoder_film_is_trained_and_saved(tmp_path):
    assert run(tmp_path / "film", "--epochs", "1", "--decoder-film", "--label-gates") == 0
    model = CCVAE.from_pretrained(tmp_path / "film" / "model")
    assert model.config["decoder_film"] is True and model.config["label_gates"] is True
    assert model.decoder.film.in_features == model.latent_dim + model.num_labels  # z and the gates
    assert model.decoder.film.weight.abs().max() > 0  # trained away from its zero start


def test_oversample_draws_the_labelled_faces_with_the_label_more_often(tmp_path, monkeypatch, capsys):
    from train import batches

    drawn = []
    real = batches.weighted_epoch_order

    def spy(weights, seed, epoch):
        order = real(weights, seed, epoch)
        drawn.append((np.asarray(weights), order))
        return order

    monkeypatch.setattr(batches, "weighted_epoch_order", spy)
    assert run(tmp_path / "over", "--epochs", "2", "--oversample", "Wearing_Earrings=4") == 0
    assert len(drawn) == 2 and drawn[0][1].shape == (120,)
    weights = drawn[0][0]
    assert set(np.unique(weights)) == {1.0, 4.0}
    earrings = weights == 4.0                                   # the faces that wear them: a quarter or so
    share = np.mean([earrings[order.numpy()].mean() for _, order in drawn])
    expected = 4 * earrings.mean() / (4 * earrings.mean() + (1 - earrings.mean()))
    assert share > earrings.mean() + 0.1 and abs(share - expected) < 0.15
    history = json.loads((tmp_path / "over" / "args.json").read_text())
    assert history[-1]["oversample"] == ["Wearing_Earrings", 4.0]
    assert run(tmp_path / "bad", "--epochs", "1", "--oversample", "Earrings=4") == 2
    assert "error: --oversample: unknown label 'Earrings'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trainer.parse_args([*QUICK, "--out", str(tmp_path / "x"), "--oversample", "Wearing_Earrings=-1"])
    assert "expected LABEL=W with W a positive number, got 'Wearing_Earrings=-1'" in capsys.readouterr().err


def test_label_gates_are_trained_and_saved(tmp_path):
    assert run(tmp_path / "gated", "--epochs", "1", "--label-gates") == 0
    from ccvae.networks import Decoder

    model = CCVAE.from_pretrained(tmp_path / "gated" / "model")
    assert model.config["label_gates"] is True and model.decoder.gates == model.num_labels
    # trained: the centres left 0 and the slopes their starting value
    assert model.decoder.gate_center.abs().min() > 0
    assert not torch.allclose(model.decoder.gate_log_slope.exp(), torch.full((model.num_labels,), Decoder.GATE_SLOPE))


def test_the_trainer_saves_the_exclusive_pairs_of_its_labelled_data(tmp_path, monkeypatch):
    from train.data import load_dataset

    seen = []

    def pairs(labels, names, **kwargs):
        seen.append(np.asarray(labels).copy())
        return [["Black_Hair", "Blond_Hair"]]

    monkeypatch.setattr(evaluate, "exclusive_pairs", pairs)
    assert run(tmp_path / "run", "--epochs", "1", "--sup-frac", "0.5", "--intervention-weight", "1") == 0
    model = CCVAE.from_pretrained(tmp_path / "run" / "model")
    assert model.config["exclusive_labels"] == [["Black_Hair", "Blond_Hair"]]
    assert "Black_Hair / Blond_Hair" in (tmp_path / "run" / "model" / "README.md").read_text()
    # found in the labelled half of the training faces, not in all of them
    train = load_dataset("synthetic", "train", label_names=model.label_names, limit=120)
    assert len(seen) == 1 and seen[0].shape == (60, model.num_labels)
    assert all((train.labels == row).all(1).any() for row in seen[0])


def _weights(path: Path) -> dict:
    return load_file(str(path / "state" / "model.safetensors"))


def test_resume_is_exact(tmp_path):
    semi = ["--sup-frac", "0.5"]
    assert run(tmp_path / "straight", "--epochs", "2", *semi) == 0
    assert run(tmp_path / "split", "--epochs", "1", *semi) == 0
    assert run(tmp_path / "split", "--epochs", "1", *semi) == 2  # refuses to overwrite without --resume
    assert run(tmp_path / "split", "--epochs", "2", "--resume", *semi) == 0
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a = load_file(str(tmp_path / "straight" / "state" / "training_state.safetensors"))
    opt_b = load_file(str(tmp_path / "split" / "state" / "training_state.safetensors"))
    for k in opt_a:
        assert torch.equal(opt_a[k], opt_b[k]), k


def test_resume_takes_the_exclusive_pairs_from_the_data_and_still_refuses_another_model(tmp_path, capsys):
    assert run(tmp_path / "run", "--epochs", "1") == 0
    config_file = tmp_path / "run" / "state" / "config.json"
    config = json.loads(config_file.read_text())
    del config["exclusive_labels"]  # a state saved before the pairs were kept
    config_file.write_text(json.dumps(config))
    assert run(tmp_path / "run", "--epochs", "2", "--resume") == 0
    assert CCVAE.from_pretrained(tmp_path / "run" / "model").config["exclusive_labels"] == []
    config = json.loads(config_file.read_text())
    config["prior_separation"] = 3.0
    config_file.write_text(json.dumps(config))
    assert run(tmp_path / "run", "--epochs", "3", "--resume") == 2
    assert "was built with a different config (prior_separation)" in capsys.readouterr().err


def test_interrupt_saves_and_resumes_mid_epoch(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = objective.supervised

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(objective, "supervised", interrupting)
    assert run(tmp_path / "run", "--epochs", "2") == 130
    assert "interrupted" in capsys.readouterr().err
    state = json.loads((tmp_path / "run" / "state" / "training_state.json").read_text())
    assert state["counters"] == {**state["counters"], "epoch": 0, "batch": 2}
    monkeypatch.setattr(objective, "supervised", real)
    assert run(tmp_path / "run", "--epochs", "2", "--resume") == 0
    assert run(tmp_path / "straight", "--epochs", "2") == 0
    a, b = _weights(tmp_path / "run"), _weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = objective.supervised

    def poisoned(*args, **kwargs):
        result = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 3:  # epoch 1 has 3 batches: poison epoch 2
            result.loss = result.loss * float("nan")
        return result

    monkeypatch.setattr(objective, "supervised", poisoned)
    assert run(tmp_path / "run", "--epochs", "3") == 1
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 2, batch 1" in err and "epoch 1" in err
    state = json.loads((tmp_path / "run" / "state" / "training_state.json").read_text())
    assert state["counters"]["epoch"] == 1
    CCVAE.from_pretrained(tmp_path / "run" / "state")  # still loadable


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", *QUICK, "--epochs", "2", "--sup-frac", "0.5", "--out", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["rank_max_abs_diff"] == 0.0 for r in log)
    assert "x2" in proc.stderr  # trained on 2 ranks
    CCVAE.from_pretrained(tmp_path / "ddp" / "model")
    # a schedule that the clock ends: every rank reads rank 0's clock, so they stop at the same step
    # (a rank stopping alone would leave the other waiting in its next all-reduce until the timeout)
    cmd = [*cmd[:cmd.index("--epochs")], "--epochs", "50", "--sup-frac", "0.5", "--schedule-minutes", "0.02",
           "--out", str(tmp_path / "timed")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the schedule of 0.02 minutes ended" in proc.stderr
    log = [json.loads(line) for line in (tmp_path / "timed" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["epoch"] < 50 and all(r["rank_max_abs_diff"] == 0.0 for r in log)


def test_missing_dataset_folder_is_a_clear_error(tmp_path, capsys):
    code = trainer.cli(["--dataset", "celeba", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err and "Traceback" not in err


def test_help_says_each_default_once(capsys):
    with pytest.raises(SystemExit) as exit_:
        trainer.parse_args(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: synthetic)" in text  # the formatter still adds defaults the help leaves out
    assert "(default: it runs to the end)" in text and "(default: it runs to the end) (default:" not in text
    for at in [i for i in range(len(text)) if text.startswith("(default:", i)]:
        assert not text[text.index(")", at) + 1:].lstrip().startswith("(default:"), text[at - 80:at + 80]


@pytest.fixture
def tiny_run(tmp_path):
    assert run(tmp_path / "run", "--epochs", "1") == 0
    return tmp_path / "run"


def test_evaluate_writes_the_documented_keys(tiny_run, tmp_path):
    out = tmp_path / "metrics.json"
    code = evaluate.main(evaluate.parse_args([str(tiny_run / "model"), "--dataset", "synthetic", "--limit", "60",
                                              "--n-oracle", "20", "--json", str(out)]))
    assert code == 0
    m = json.loads(out.read_text())
    for key in ("mean_accuracy", "per_label_accuracy", "psnr", "mse", "intervention_success",
                "intervention_leakage", "conditional_accuracy", "diversity"):
        assert key in m, key
    assert 0 <= m["mean_accuracy"] <= 1 and m["psnr"] > 0
    assert set(m["intervention_success"]) == set(m["per_label_accuracy"])
    assert all({"variance", "style_variance", "ratio", "oracle_present"} <= set(d) for d in m["diversity"].values())
    # one yardstick for every label: resampling a style latent, averaged over the active ones
    assert len({d["style_variance"] for d in m["diversity"].values()}) == 1


def test_evaluate_update_writes_the_metrics_into_the_model_folder(tiny_run, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_run / "model", folder)
    before = (folder / "README.md").read_text()
    assert "Not evaluated yet" in before and not (folder / "metrics.json").exists()
    args = [str(folder), "--limit", "40", "--n-oracle", "10", "--update"]
    assert evaluate.main(evaluate.parse_args(args)) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    card = (folder / "README.md").read_text()
    assert "Not evaluated yet" not in card and f"| mean_accuracy | {metrics['mean_accuracy']:.4g} |" in card
    head, tail = (before.split("## Evaluation (test split)")[i] for i in (0, 1))
    assert card.startswith(head) and card.endswith(tail[tail.index("\n## "):])  # the rest of the card kept
    # a Hub id is not a folder to write into: refused before anything is loaded
    assert evaluate.main(evaluate.parse_args(["someone/ccvae-model", "--update"])) == 2
    assert "--update writes into a local model folder" in capsys.readouterr().err


def test_modelcard_takes_the_metrics_of_a_later_evaluation(tiny_run, tmp_path, capsys):
    from train import modelcard

    card = tiny_run / "model" / "README.md"
    assert "Not evaluated yet" in card.read_text()
    out = tmp_path / "metrics.json"
    assert evaluate.main(evaluate.parse_args([str(tiny_run / "model"), "--limit", "40", "--n-oracle", "10",
                                              "--json", str(out)])) == 0
    assert modelcard.main([str(tiny_run), "--metrics", str(out)]) == 0
    text = card.read_text()
    metrics = json.loads(out.read_text())
    assert "Not evaluated yet" not in text and f"| mean_accuracy | {metrics['mean_accuracy']:.4g} |" in text
    assert "--epochs 1" in text and "trained for 1 epochs" in text
    assert modelcard.main([str(tmp_path / "nothing"), "--metrics", str(out)]) == 1
    assert "error:" in capsys.readouterr().err


def test_publish_dry_run_writes_a_loadable_folder(tiny_run, tmp_path, capsys):
    out = tmp_path / "upload"
    assert publish.main(publish.parse_args([str(tiny_run), "--repo-id", "someone/ccvae-test", "--dry-run", str(out)])) == 0
    assert {"config.json", "model.safetensors", "README.md", "traversal.png"} <= {p.name for p in out.iterdir()}
    CCVAE.from_pretrained(out)


def test_publish_without_token_or_network_fails_clearly(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert publish.main(publish.parse_args([str(tiny_run), "--repo-id", "someone/x"])) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")

    def refused(*args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refused)
    assert publish.main(publish.parse_args([str(tiny_run), "--repo-id", "someone/x"])) == 1
    err = capsys.readouterr().err
    assert "could not create or open someone/x" in err and "nothing was uploaded" in err
    assert publish.main(publish.parse_args([str(tiny_run), "--repo-id", "not a repo id"])) == 1
    assert publish.main(publish.parse_args([str(tmp_path / "empty"), "--repo-id", "a/b", "--dry-run", str(tmp_path / "o")])) == 1


def test_feasible_interventions_exclude_combinations_the_data_never_shows():
    from train.evaluate import feasible_interventions, pair_support

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
    from train.evaluate import active_units

    z = torch.zeros(50, 4)
    z[:, 1] = torch.linspace(-2, 2, 50)
    z[:, 3] = torch.linspace(1, -1, 50)
    assert active_units(z).tolist() == [1, 3]
    assert active_units(torch.zeros(50, 3)).tolist() == [0, 1, 2]  # none active: all


def test_diversity_present_counts_the_faces_that_show_the_label():
    """oracle_present: of the resamples of faces that have label i, the share the oracle still
    reads as i; oracle_present_all_faces: the same over every face."""
    from conftest import tiny_model
    from train.evaluate import oracle_metrics

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
    from conftest import tiny_model
    from train.evaluate import oracle_metrics

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
    from ccvae.distributions import DiagonalGaussian
    from conftest import tiny_model
    from train.evaluate import oracle_metrics

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


def test_residual_emphasis_reaches_the_loss_until_its_end_epoch_and_bad_values_are_named(tmp_path, capsys, monkeypatch):
    seen, supervised = [], objective.supervised
    monkeypatch.setattr(objective, "supervised", lambda *a, **kw: seen.append(kw["emphasis"]) or supervised(*a, **kw))
    assert run(tmp_path / "emph", "--epochs", "2", "--residual-emphasis", "1", "--residual-emphasis-until", "1") == 0
    assert [e.power for e in seen] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # 3 batches an epoch: on in the first, off from epoch 1
    assert {e.floor for e in seen} == {0.01}  # the default floor
    args = trainer.parse_args([*QUICK, "--out", "x", "--residual-emphasis", "2", "--residual-emphasis-floor", "0.1"])
    assert trainer.residual_emphasis(args, 0) == trainer.residual_emphasis(args, 99) == (2.0, 0.1)  # to the end by default
    assert trainer.residual_emphasis(trainer.parse_args([*QUICK, "--out", "x"]), 0).power == 0.0  # off by default
    monkeypatch.setattr(objective, "supervised", supervised)
    assert run(tmp_path / "bad", "--epochs", "1", "--residual-emphasis", "-1") == 2
    assert "--residual-emphasis must be a finite power >= 0, got -1.0" in capsys.readouterr().err
    assert run(tmp_path / "bad3", "--epochs", "1", "--residual-emphasis", "inf") == 2
    assert "--residual-emphasis must be a finite power >= 0, got inf" in capsys.readouterr().err
    assert run(tmp_path / "bad2", "--epochs", "1", "--residual-emphasis", "1", "--residual-emphasis-until", "-2") == 2
    assert "--residual-emphasis-until must be an epoch >= 0, got -2.0" in capsys.readouterr().err
    assert run(tmp_path / "bad4", "--epochs", "1", "--residual-emphasis", "1", "--residual-emphasis-floor", "0") == 2
    assert "--residual-emphasis-floor must be a finite number > 0, got 0.0" in capsys.readouterr().err
    assert not (tmp_path / "bad4").exists()  # refused before anything is written


def test_fit_prior_fits_evaluates_and_writes_a_new_folder_leaving_the_source_as_it_was(tiny_run, tmp_path, capsys):
    from train import fit_prior

    source = tiny_run / "model"
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    out = tmp_path / "fitted"
    assert fit_prior.main(fit_prior.parse_args([str(source), "--out", str(out), "--n", "100", "--eval-limit", "40",
                                                "--n-oracle", "10"])) == 0
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before
    model = CCVAE.from_pretrained(out)
    assert model.config["fitted_style_prior"] and model.style_prior_tril.shape == (model.style_dim, model.style_dim)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["conditional_accuracy"] <= 1 and 0 <= metrics["conditional_accuracy_standard_prior"] <= 1
    card = (out / "README.md").read_text()
    assert card.count("## Style prior") == 1 and "python -m train.fit_prior" in card and "--n 100" in card
    assert f"| conditional_accuracy_standard_prior | {metrics['conditional_accuracy_standard_prior']:.4g} |" in card
    assert "fitted to 100 training faces" in capsys.readouterr().err
    # fitted again in place without evaluation: one section, the stale metrics gone
    assert fit_prior.main(fit_prior.parse_args([str(out), "--n", "60", "--no-eval"])) == 0
    card = (out / "README.md").read_text()
    assert card.count("## Style prior") == 1 and "--n 60" in card and "Not evaluated since the style prior" in card
    assert not (out / "metrics.json").exists()
    # a run's model card rewritten with later metrics (train.modelcard) keeps the section
    from train import modelcard

    assert fit_prior.main(fit_prior.parse_args([str(source), "--n", "60", "--no-eval"])) == 0
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    assert modelcard.main([str(tiny_run), "--metrics", str(tmp_path / "m.json")]) == 0
    card = (source / "README.md").read_text()
    assert card.count("## Style prior") == 1 and "--n 60" in card and "Not evaluated" not in card
    assert "style latents generated from: a full-covariance Gaussian" in card


def test_fit_prior_refuses_bad_input_by_name_and_writes_nothing(tiny_run, tmp_path, capsys):
    from train import fit_prior

    source = tiny_run / "model"
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    assert fit_prior.main(fit_prior.parse_args([str(source), "--n", "0"])) == 2
    assert "--n must be a positive" in capsys.readouterr().err
    assert fit_prior.main(fit_prior.parse_args([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])) == 2
    assert "is not a model folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before
    assert not (tmp_path / "o").exists()


def test_the_trainer_fits_the_style_prior_when_asked(tmp_path, capsys):
    assert run(tmp_path / "run", "--epochs", "1", "--fit-style-prior", "80") == 0
    model = CCVAE.from_pretrained(tmp_path / "run" / "model")
    assert model.config["fitted_style_prior"]
    assert "fitted to 80 training faces" in capsys.readouterr().err
    assert "`--fit-style-prior 80`" in (tmp_path / "run" / "model" / "README.md").read_text()
    assert run(tmp_path / "bad", "--epochs", "1", "--fit-style-prior", "-1") == 2
    assert "--fit-style-prior must be" in capsys.readouterr().err and not (tmp_path / "bad").exists()
