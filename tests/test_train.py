"""The training CLI end to end on a few hundred synthetic faces (tiny settings, CPU): recipes and
overrides, the run folder, exact resumption, the training aids reaching the loss, evaluation and
publishing of the result."""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ccvae import CCVAE, objective
from train import aids, batches, evaluate, modelcard, publish, trainer
from train.config import CONFIG_NAME, RECIPES, SETTING_FLAGS, TrainConfig, load_recipe, override, to_dict
from train.data import PAPER_LABELS

ROOT = Path(__file__).resolve().parents[1]
# settings small enough for a CPU test: 120 faces in 3 labelled batches an epoch
TINY = ["--limit", "120", "--batch-size", "40", "--k", "8", "--latent-dim", "20", "--set", "val_limit=40",
        "--fit-style-prior", "0"]
RUN = ["--threads", "1", "--no-figures", "--no-eval"]  # run options, not settings
GAMMA = ["--intervention-weight", "10", "--intervention-from", "0"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def run(out: Path, *extra: str) -> int:
    return trainer.cli([*TINY, *RUN, "--out", str(out), *extra])


def resolved(*argv: str) -> TrainConfig:
    return trainer.resolve_config(trainer.parse_args([*argv, "--out", "unused"]))


def changed(a: TrainConfig, b: TrainConfig) -> dict:
    """The settings in which b differs from a, with b's values."""
    before, after = to_dict(a), to_dict(b)
    return {k: v for k, v in after.items() if before[k] != v}


def saved_config(folder: Path) -> dict:
    return json.loads((folder / CONFIG_NAME).read_text())


def log_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict:
    return load_file(str(path / "state" / "model.safetensors"))


def spy(monkeypatch, module, name: str) -> list[dict]:
    """Record the keyword arguments of every call of module.name (which still runs)."""
    calls, real = [], getattr(module, name)

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


# --- recipes and overrides (no training) ---------------------------------------------------------

def test_every_bundled_recipe_loads_and_names_its_dataset():
    recipes = {path.stem: load_recipe(path.stem) for path in sorted(RECIPES.glob("*.json"))}
    assert {"synthetic-faces", "celeba"} <= set(recipes)
    assert recipes["synthetic-faces"].dataset == "synthetic" and recipes["celeba"].dataset == "celeba"
    for name, config in recipes.items():
        assert load_recipe(RECIPES / f"{name}.json") == config  # by name and by path alike
        text = json.loads((RECIPES / f"{name}.json").read_text())
        # every setting spelled out, so the file alone says what the run does
        assert set(text) - {"_comment"} == set(to_dict(config)), name


def test_recipe_by_name_or_path_and_each_flag_or_set_overrides_one_setting(tmp_path):
    recipe = load_recipe("synthetic-faces")
    assert resolved("--recipe", "synthetic-faces") == recipe
    assert resolved() == TrainConfig()  # no recipe: the defaults
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"_comment": "a shorter run", "epochs": 3, "intervention_precedence": ["Bald"]}))
    assert changed(TrainConfig(), resolved("--recipe", str(mine))) == {"epochs": 3, "intervention_precedence": ["Bald"]}
    assert changed(recipe, resolved("--recipe", "synthetic-faces", "--epochs", "2")) == {"epochs": 2}
    assert changed(recipe, resolved("--recipe", "synthetic-faces", "--set", "residual_emphasis=0.25")) == {
        "residual_emphasis": 0.25}
    assert changed(recipe, resolved("--recipe", "synthetic-faces", "--epochs", "2", "--set", "hidden_dim=48",
                                    "--set", "channels=[16, 8, 8, 8]", "--set", "label_gates=false")) == {
        "epochs": 2, "hidden_dim": 48, "channels": [16, 8, 8, 8], "label_gates": False}
    assert changed(recipe, resolved("--recipe", "synthetic-faces", "--label-names", "Bald", "Smiling",
                                    "--set", "intervention-precedence=[]")) == {
        "label_names": ["Bald", "Smiling"], "intervention_precedence": []}
    # every flag overrides the setting it names, and no other
    for flag, spec in SETTING_FLAGS.items():
        name = spec.get("dest", flag.replace("-", "_"))
        value = spec["choices"][-1] if "choices" in spec else {int: "128", float: "0.5"}.get(spec.get("type"), "Bald")
        assert set(changed(TrainConfig(), resolved(f"--{flag}", value))) == {name}, flag


@pytest.mark.parametrize("argv, message", [
    (["--set", "colour=blue"], "unknown setting 'colour'"),
    (["--set", "epochs"], "--set takes NAME=VALUE, got 'epochs'"),
    (["--set", "epochs=two"], "epochs must be int, got 'two'"),
    (["--set", "epochs=1.5"], "epochs must be int, got 1.5"),
    (["--set", "label_gates=1"], "label_gates must be bool, got 1"),
    (["--recipe", "imagenet"], "unknown recipe 'imagenet'; the bundled recipes are ['celeba', 'synthetic-faces']"),
    (["--recipe", "missing.json"], "recipe 'missing.json': no such file"),
    (["--epochs", "0"], "epochs must be at least 1, got 0"),
    (["--intervention-from", "1.5"], "intervention_from must be a fraction of the run in [0, 1], got 1.5"),
    (["--set", "intervention_start=40"], "intervention_start was replaced by intervention_from, a fraction of the run"),
    (["--set", "intervention_focus=2"], "intervention_focus must be in [0, 1], got 2.0"),
    (["--set", 'intervention_precedence=["Bald", "Bald"]'],
     "intervention_precedence must be a list of distinct labels, got ['Bald', 'Bald']"),
    (["--set", "residual_emphasis=-1"], "residual_emphasis must be a finite number >= 0, got -1.0"),
    (["--set", "residual_emphasis_floor=0"], "residual_emphasis_floor must be a finite number > 0, got 0.0"),
    (["--set", "channels=[16, 0, 8, 8]"], "channels must be positive widths, got [16, 0, 8, 8]"),
    (["--set", "hidden_dim=0"], "hidden_dim must be a positive width, got 0"),
    (["--fit-style-prior", "-1"], "fit_style_prior must be a number of training faces >= 0, got -1"),
])
def test_bad_settings_are_named_and_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert trainer.cli([*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_recipe_file_with_an_unknown_setting_or_bad_json_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epochs": 2, "max_minutes": 30}))
    assert trainer.cli(["--recipe", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert f"recipe {bad}: unknown settings ['max_minutes']" in capsys.readouterr().err
    bad.write_text("{epochs: 2")
    assert trainer.cli(["--recipe", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert f"recipe {bad} is not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_help_lists_at_most_30_options_and_every_setting_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        trainer.parse_args(["--help"])
    assert exit_.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    options = [line.split()[0].rstrip(",") for line in lines if line.startswith("  -")]
    assert 20 <= len(options) <= 31, options
    assert {f"--{flag}" for flag in SETTING_FLAGS} | {"--recipe", "--set", "--out", "--resume",
                                                     "--list-settings"} <= set(options)
    text = " ".join(" ".join(lines).split())
    assert text.count("(default: ") >= len(SETTING_FLAGS)  # each setting says what it takes without a recipe
    assert "(default: 0.8)" in text and "a number of faces (0: N(0, I)) (default: 10000)" in text
    with pytest.raises(SystemExit) as exit_:
        trainer.parse_args(["--list-settings"])  # the names --set takes, with no --out needed
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert exit_.value.code == 0 and listed == list(to_dict(TrainConfig()))
    assert not {"--max-minutes", "--oversample", "--lr-schedule", "--channels", "--val-limit"} & set(options)


def test_the_card_command_of_a_config_near_a_recipe_resolves_to_that_config():
    """A few settings away from a bundled recipe, the card names the recipe and one override per
    setting, quoted for the shell (a --root with a space in it stays one argument)."""
    for config in (
        override(load_recipe("celeba"), {"root": "/data/my celeba", "sup_frac": 0.2, "fit_style_prior": 0}),
        override(load_recipe("synthetic-faces"), {"epochs": 2, "residual_emphasis": 0.25, "label_names": [
            "Bald", "Smiling"], "intervention_precedence": ["Bald"]}),
    ):
        command = modelcard.command(config)
        argv = shlex.split(command, comments=True)
        assert argv[:5] == ["python", "-m", "train", "--recipe", "celeba" if config.dataset == "celeba" else
                            "synthetic-faces"] and argv[-2:] == ["--out", "runs/NAME"], command
        # local paths are placeholders: the card never names the user's folders
        assert "/data" not in command and trainer.resolve_config(trainer.parse_args(argv[3:])) == modelcard.public(config)
    assert modelcard.public(config).root is None  # (the synthetic config has no path)
    assert modelcard.public(override(load_recipe("celeba"), {"root": "/data/x"})).root == "CELEBA_DIR"
    # the bundled model's card names its recipe (and the alpha it was trained with before the recipe's
    # became 3000); a run given no recipe names none
    bundled = load_recipe(ROOT / "checkpoints" / "synthetic-faces" / CONFIG_NAME)
    assert modelcard.command(bundled) == modelcard.command(bundled, "synthetic-faces") == (
        "python -m train --recipe synthetic-faces --classification-weight 300.0 --out runs/NAME")
    assert f"\n{modelcard.command(bundled)}\n" in (ROOT / "checkpoints" / "synthetic-faces" / "README.md").read_text()
    assert modelcard.command(override(TrainConfig(), {"epochs": 3}), None) == "python -m train --epochs 3 --out runs/NAME"


# --- a run folder ----------------------------------------------------------------------------------

def test_one_epoch_writes_a_loadable_model_card_figures_and_the_resolved_settings(tmp_path):
    argv = [*TINY, "--threads", "1", "--no-eval", "--epochs", "1", "--out", str(tmp_path / "run")]
    assert trainer.cli(argv) == 0
    run_dir = tmp_path / "run"
    model = CCVAE.from_pretrained(run_dir / "model")
    assert "Eyeglasses" in model.label_names and model.latent_dim == 20
    # the defaults' decoder: label gates and FiLM, both trained away from their start
    assert model.config["label_gates"] and model.config["decoder_film"]
    assert model.decoder.film.weight.abs().max() > 0 and model.decoder.gate_center.abs().min() > 0
    card = (run_dir / "model" / "README.md").read_text()
    assert "f = 1.0" in card and "Eyeglasses" in card and "traversal.png" in card
    assert "Not evaluated yet" in card and not (run_dir / "model" / "metrics.json").exists()
    assert (run_dir / "model" / "traversal.png").stat().st_size > 1000
    assert {p.name for p in (run_dir / "figures").iterdir()} == {
        "epoch001_reconstruction.png", "epoch001_traversal.png", "epoch001_diversity.png"}
    log = log_of(run_dir)
    assert len(log) == 1 and log[0]["epoch"] == 1 and 0.0 <= log[0]["val_accuracy"] <= 1.0 and "sup_loss" in log[0]
    assert log[0]["lr"] == pytest.approx(trainer.lr_at(TrainConfig(epochs=1), 2 / 3))  # the cosine at the last step
    # the label prior holds the labelled frequencies
    assert not torch.allclose(model.label_prior, torch.full_like(model.label_prior, 0.5))
    # the run folder and the model folder keep the resolved settings
    settings = to_dict(trainer.resolve_config(trainer.parse_args(argv)))
    assert saved_config(run_dir) == saved_config(run_dir / "model") == settings
    assert settings["epochs"] == 1 and settings["val_limit"] == 40 and settings["limit"] == 120


def test_the_card_command_run_as_given_retrains_the_same_model(tmp_path, monkeypatch):
    assert run(tmp_path / "first", "--epochs", "1", "--seed", "3") == 0
    card = (tmp_path / "first" / "model" / "README.md").read_text()
    command = next(line for line in card.splitlines() if line.startswith("python -m train"))
    argv = shlex.split(command, comments=True)
    assert argv[:3] == ["python", "-m", "train"] and argv[-2:] == ["--out", "runs/NAME"], command
    monkeypatch.chdir(tmp_path / "first" / "model")  # as a reader of the card runs it, beside it
    assert trainer.cli([*argv[3:-1], str(tmp_path / "again"), *RUN]) == 0
    assert saved_config(tmp_path / "again") == saved_config(tmp_path / "first")
    a, b = _weights(tmp_path / "first"), _weights(tmp_path / "again")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_dataset_folder_is_a_clear_error(tmp_path, capsys):
    code = trainer.cli(["--recipe", "celeba", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nowhere" in err and "Traceback" not in err


def test_architecture_settings_build_the_trained_model_and_bad_widths_are_named(tmp_path, capsys):
    assert run(tmp_path / "wide", "--epochs", "1", "--set", "hidden_dim=48", "--set", "channels=[16, 8, 8, 8]",
               "--set", "decoder_film=false", "--set", "label_gates=false", "--set", "likelihood_scale=0.2") == 0
    model = CCVAE.from_pretrained(tmp_path / "wide" / "model")
    assert model.config["hidden_dim"] == 48 and model.config["channels"] == [16, 8, 8, 8]
    assert model.encoder.loc.in_features == 48 and model.decoder.project[0].out_features == 48
    assert model.encoder.body[0].out_channels == 16  # the first conv, at full resolution
    assert model.decoder.body[-1].in_channels == 16  # the last transposed conv mirrors it
    assert not model.config["decoder_film"] and not hasattr(model.decoder, "film") and model.decoder.gates == 0
    assert model.config["likelihood_scale"] == 0.2
    assert run(tmp_path / "short", "--epochs", "1", "--set", "channels=[16, 8]") == 2
    err = capsys.readouterr().err
    assert "64x64 images need 4 conv channels, got [16, 8]" in err and "Traceback" not in err
    assert not (tmp_path / "short").exists()


# --- resuming --------------------------------------------------------------------------------------

def interrupt_at(monkeypatch, step: int) -> None:
    """Send SIGINT (Ctrl-C) during objective call `step` (1-based, labelled and unlabelled alike)."""
    calls = {"n": 0}
    for name in ("supervised", "unsupervised"):
        real = getattr(objective, name)

        def interrupting(*args, _real=real, **kwargs):
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signal.SIGINT)
            return _real(*args, **kwargs)

        monkeypatch.setattr(objective, name, interrupting)


def test_resume_is_exact_and_a_flag_still_overrides_the_saved_settings(tmp_path, monkeypatch, capsys):
    settings = ["--epochs", "2", "--sup-frac", "0.5"]  # 2 steps an epoch, each a labelled and an unlabelled batch
    assert run(tmp_path / "straight", *settings) == 0
    with monkeypatch.context() as m:
        interrupt_at(m, 4)  # the unlabelled half of the last step of epoch 1
        assert run(tmp_path / "split", *settings) == 130
    state = json.loads((tmp_path / "split" / "state" / "training_state.json").read_text())
    assert state["counters"] == {**state["counters"], "epoch": 0, "batch": 2}
    assert run(tmp_path / "split", *settings) == 2  # refuses to overwrite without --resume
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert trainer.cli(["--resume", *RUN, "--out", str(tmp_path / "split")]) == 0  # the saved settings
    assert saved_config(tmp_path / "split") == saved_config(tmp_path / "straight")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a = load_file(str(tmp_path / "straight" / "state" / "training_state.safetensors"))
    opt_b = load_file(str(tmp_path / "split" / "state" / "training_state.safetensors"))
    for k in opt_a:  # Adam's moments and the random generator
        assert torch.equal(opt_a[k], opt_b[k]), k
    assert [r["epoch"] for r in log_of(tmp_path / "split")] == [1, 2]
    # a flag overrides a saved setting: one more epoch, on the cosine of a 3-epoch run
    assert trainer.cli(["--resume", "--epochs", "3", *RUN, "--out", str(tmp_path / "straight")]) == 0
    config = TrainConfig(**saved_config(tmp_path / "straight"))
    assert config == override(TrainConfig(**saved_config(tmp_path / "split")), {"epochs": 3})
    log = log_of(tmp_path / "straight")
    assert [r["epoch"] for r in log] == [1, 2, 3] and log[2]["step"] == 6
    assert log[2]["lr"] == pytest.approx(trainer.lr_at(config, 2 + 1 / 2))  # its last step
    # a folder that is no run, or a recipe given with --resume, is refused by name
    assert trainer.cli(["--resume", *RUN, "--out", str(tmp_path / "nothing")]) == 2
    assert f"{tmp_path / 'nothing'} holds no {CONFIG_NAME}" in capsys.readouterr().err
    assert trainer.cli(["--resume", "--recipe", "celeba", *RUN, "--out", str(tmp_path / "split")]) == 2
    assert "leave out --recipe" in capsys.readouterr().err


def test_interrupt_saves_mid_epoch_and_a_resume_without_flags_finishes_the_same_run(tmp_path, monkeypatch, capsys):
    settings = ["--epochs", "2", "--sup-frac", "0.5", "--set", "residual_emphasis=0.5", *GAMMA, "--seed", "1"]
    with monkeypatch.context() as m:
        interrupt_at(m, 2)  # the unlabelled half of step 1 of 2
        assert run(tmp_path / "run", *settings) == 130
    assert "interrupted: saved the run at epoch 1, step 1" in capsys.readouterr().err
    state = json.loads((tmp_path / "run" / "state" / "training_state.json").read_text())
    assert state["counters"] == {**state["counters"], "epoch": 0, "batch": 1}
    # no setting on the command line: the run's saved settings come back
    assert trainer.cli(["--resume", *RUN, "--out", str(tmp_path / "run")]) == 0
    assert run(tmp_path / "straight", *settings) == 0
    assert saved_config(tmp_path / "run") == saved_config(tmp_path / "straight")
    assert saved_config(tmp_path / "run")["residual_emphasis"] == 0.5
    a, b = _weights(tmp_path / "run"), _weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)


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
    assert "the loss became nan at epoch 2, step 1" in err and "epoch 1" in err
    state = json.loads((tmp_path / "run" / "state" / "training_state.json").read_text())
    assert state["counters"]["epoch"] == 1
    assert len(log_of(tmp_path / "run")) == 1
    CCVAE.from_pretrained(tmp_path / "run" / "state")  # still loadable


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train", *TINY, *RUN, "--epochs", "2", "--sup-frac", "0.5", "--out", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = log_of(tmp_path / "ddp")
    assert len(log) == 2 and all(r["rank_max_abs_diff"] == 0.0 for r in log)
    assert "x2" in proc.stderr  # trained on 2 ranks
    CCVAE.from_pretrained(tmp_path / "ddp" / "model")


# --- the training aids reach the loss --------------------------------------------------------------

def test_every_step_takes_a_labelled_batch_beside_the_unlabelled_one_at_a_small_fraction(tmp_path, monkeypatch):
    # 120 faces at f = 0.1: 12 labelled, 108 unlabelled; with batch 40 an epoch is 3 steps (a pass over
    # the unlabelled ones), each with a labelled batch of 40 drawn by cycling the 12
    sup, unsup = spy(monkeypatch, objective, "supervised"), spy(monkeypatch, objective, "unsupervised")
    shapes = []
    real = trainer.batches.batch_to_device
    monkeypatch.setattr(trainer.batches, "batch_to_device",
                        lambda images, idx, *a, **k: shapes.append((len(images), len(idx))) or real(images, idx, *a, **k))
    assert run(tmp_path / "run", "--epochs", "2", "--sup-frac", "0.1") == 0
    assert len(sup) == len(unsup) == 6
    assert shapes[:2] == [(12, 40), (108, 40)] and shapes[4:6] == [(12, 40), (108, 28)]
    assert [r["step"] for r in log_of(tmp_path / "run")] == [3, 6]


def test_cycled_batches_see_every_item_once_a_pass_and_depend_on_their_index_alone():
    n, size = 7, 3
    stream = torch.cat([batches.cycled_batch(n, size, 5, t) for t in range(14)])  # 42 items: 6 passes
    for p in range(6):
        assert sorted(stream[p * n:(p + 1) * n].tolist()) == list(range(n))
    assert not torch.equal(stream[:n], stream[n:2 * n])  # each pass is shuffled anew
    assert torch.equal(batches.cycled_batch(n, size, 5, 9), stream[27:30])
    big = batches.cycled_batch(3, 8, 0, 1)  # a batch larger than the set spans passes
    assert len(big) == 8 and set(big.tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="n=0"):
        batches.cycled_batch(0, 4, 0, 0)


def test_the_intervention_term_applies_from_its_fraction_of_the_run_with_exclusive_partners_cleared(tmp_path, monkeypatch):
    edits = spy(monkeypatch, aids, "intervention_edits")
    assert run(tmp_path / "late", "--epochs", "2", *GAMMA[:2], "--intervention-from", "0.5") == 0
    log = log_of(tmp_path / "late")
    assert "sup_intervention_accuracy" not in log[0]  # epoch 1: Eq. 1 and alpha alone
    assert 0.0 <= log[1]["sup_intervention_accuracy"] <= 1.0  # epoch 2: the edits are trained
    assert len(edits) == 3  # epoch 2's three labelled batches, 16 edits each
    model = CCVAE.from_pretrained(tmp_path / "late" / "model")
    for kw in edits:
        assert kw["focus"] is None  # intervention_focus 0: labels drawn uniformly
        assert torch.equal(kw["exclusive"].cpu(), model.exclusive)  # the app's edit: partners cleared
    config = resolved("--intervention-weight", "10", "--intervention-from", "0.75", "--epochs", "2")
    assert trainer.intervention_weight(config, 1.49) == 0 and trainer.intervention_weight(config, 1.5) == 10
    # the recipes' last fifth is the last fifth of any run, however short
    short = resolved("--recipe", "synthetic-faces", "--epochs", "5")
    assert trainer.intervention_weight(short, 3.99) == 0 and trainer.intervention_weight(short, 4.0) == 300


def test_an_old_run_with_intervention_start_resumes_as_a_fraction_and_an_old_recipe_is_refused(tmp_path, capsys):
    assert run(tmp_path / "old", "--epochs", "1", *GAMMA) == 0
    settings = saved_config(tmp_path / "old")
    del settings["intervention_from"]
    settings["intervention_start"] = 0.5  # of 1 epoch, as a run of before the change saved it
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(settings))
    assert trainer.cli(["--resume", "--epochs", "2", *RUN, "--out", str(tmp_path / "old")]) == 0
    assert saved_config(tmp_path / "old")["intervention_from"] == 0.5
    (tmp_path / "old.json").write_text(json.dumps(settings))
    assert trainer.cli(["--recipe", str(tmp_path / "old.json"), *RUN, "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "intervention_start was replaced by intervention_from, a fraction of the run in [0, 1]" in err, err


def test_intervention_focus_from_set_steers_the_draw_by_the_miss_rates_and_resumes_with_them(tmp_path, monkeypatch):
    edits = spy(monkeypatch, aids, "intervention_edits")
    focus = ["--intervention-weight", "10", "--intervention-from", "0.5", "--set", "intervention_focus=0.5"]
    assert run(tmp_path / "focus", "--epochs", "2", *focus) == 0
    seen = [kw["focus"] for kw in edits]
    assert len(seen) == 3  # epoch 1: no term, nothing drawn
    torch.testing.assert_close(seen[0], torch.ones(len(seen[0])))  # the first edits: nothing missed yet, uniform
    assert all(w.min() >= 0.5 and w.mean().item() == pytest.approx(1.0) for w in seen)
    assert not torch.allclose(seen[-1], seen[0])  # then the misses steer it
    log = log_of(tmp_path / "focus")
    assert "intervention_miss_rate" not in log[0]
    rates = log[1]["intervention_miss_rate"]
    assert len(rates) == len(seen[0]) and all(0.0 <= r <= 1.0 for r in rates.values())
    state = json.loads((tmp_path / "focus" / "state" / "training_state.json").read_text())
    stats = torch.tensor(state["counters"]["edit_stats"])
    assert stats.shape == (2, len(seen[0])) and 0 < stats[0].sum() <= 3 * trainer.INTERVENTION_BATCH
    edits.clear()
    assert trainer.cli(["--resume", "--epochs", "3", *RUN, "--out", str(tmp_path / "focus")]) == 0
    torch.testing.assert_close(edits[0]["focus"], aids.edit_focus(stats, 0.5))  # goes on from the saved counts


def test_intervention_precedence_from_a_recipe_lifts_the_exclusive_pairs_one_way(tmp_path, monkeypatch, capsys):
    from train.data import labels

    edits = spy(monkeypatch, aids, "intervention_edits")
    monkeypatch.setattr(labels, "exclusive_pairs", lambda y, names: [["Bald", "Bangs"], ["Black_Hair", "Blond_Hair"]])
    recipe = tmp_path / "precedence.json"
    recipe.write_text(json.dumps({"intervention_weight": 10.0, "intervention_from": 0.0,
                                  "intervention_precedence": ["Bald"]}))
    assert trainer.cli(["--recipe", str(recipe), *TINY, *RUN, "--epochs", "1", "--out", str(tmp_path / "first")]) == 0
    model = CCVAE.from_pretrained(tmp_path / "first" / "model")
    assert model.config["exclusive_labels"] == [["Bald", "Bangs"], ["Black_Hair", "Blond_Hair"]]
    names, ex = model.label_names, edits[-1]["exclusive"].cpu()
    at = lambda a, b: bool(ex[names.index(a), names.index(b)])  # noqa: E731  (row: the label added)
    assert not at("Bald", "Bangs") and at("Bangs", "Bald")  # Bald is drawn onto bangs, never the reverse
    assert at("Black_Hair", "Blond_Hair") and at("Blond_Hair", "Black_Hair")  # unlisted pairs stay both ways
    assert ex.sum() == 3
    assert saved_config(tmp_path / "first")["intervention_precedence"] == ["Bald"]
    assert run(tmp_path / "bad", "--epochs", "1", *GAMMA, "--set", 'intervention_precedence=["Baldness"]') == 2
    assert "intervention_precedence: unknown labels ['Baldness']" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_residual_emphasis_reaches_both_losses(tmp_path, monkeypatch):
    emphases, real = [], aids.emphasised_log_likelihood

    def emphasised(model, emphasis):
        fn = real(model, emphasis)
        emphases.append((emphasis, fn))
        return fn

    monkeypatch.setattr(aids, "emphasised_log_likelihood", emphasised)
    sup, unsup = spy(monkeypatch, objective, "supervised"), spy(monkeypatch, objective, "unsupervised")
    assert run(tmp_path / "emph", "--epochs", "1", "--sup-frac", "0.5", "--set", "residual_emphasis=1",
               "--set", "residual_emphasis_floor=0.1") == 0
    (emphasis, fn), = emphases
    assert emphasis == aids.Emphasis(1.0, 0.1) and callable(fn)
    assert len(sup) == 2 and len(unsup) == 2  # 60 labelled and 60 unlabelled faces, 2 batches each
    assert all(kw["log_likelihood"] is fn for kw in sup + unsup)
    for calls in (emphases, sup, unsup):
        calls.clear()
    assert run(tmp_path / "plain", "--epochs", "1", "--sup-frac", "0.5") == 0
    assert emphases[0][0].power == 0.0 and emphases[0][1] is None
    assert all(kw["log_likelihood"] is None for kw in sup + unsup)  # the model's own log p(x|z)


def test_the_trainer_saves_the_exclusive_pairs_of_its_labelled_data(tmp_path, monkeypatch):
    from train.data import labels, load_dataset

    seen = []

    def pairs(y, names, **kwargs):
        seen.append(np.asarray(y).copy())
        return [["Black_Hair", "Blond_Hair"]]

    monkeypatch.setattr(labels, "exclusive_pairs", pairs)
    assert run(tmp_path / "run", "--epochs", "1", "--sup-frac", "0.5") == 0
    model = CCVAE.from_pretrained(tmp_path / "run" / "model")
    assert model.config["exclusive_labels"] == [["Black_Hair", "Blond_Hair"]]
    assert "Black_Hair / Blond_Hair" in (tmp_path / "run" / "model" / "README.md").read_text()
    # found in the labelled half of the training faces, not in all of them
    train = load_dataset("synthetic", "train", label_names=model.label_names, limit=120)
    assert len(seen) == 1 and seen[0].shape == (60, model.num_labels)
    assert all((train.labels == row).all(1).any() for row in seen[0])


def test_the_trainer_fits_the_style_prior_at_the_end_and_evaluates_the_result(tmp_path, capsys):
    argv = [*TINY, "--threads", "1", "--no-figures", "--epochs", "1", "--fit-style-prior", "80",
            "--eval-limit", "40", "--out", str(tmp_path / "run")]
    assert trainer.cli(argv) == 0
    model = CCVAE.from_pretrained(tmp_path / "run" / "model")
    assert model.config["fitted_style_prior"] and model.style_prior_tril.shape == (model.style_dim, model.style_dim)
    assert model.kind_directions == 3 and model.kind_basis.shape == (2, model.num_labels, 3, model.style_dim)
    err = capsys.readouterr().err
    assert "fitted to 80 training faces" in err and "kind directions fitted to 80 labelled faces" in err
    # python -m train.fit_prior refits a saved model exactly as the trainer did
    from train import fit_prior

    fitted = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        CCVAE.from_pretrained(tmp_path / "run" / "model").save_pretrained(tmp_path / "bare")
    (tmp_path / "bare" / "train_config.json").write_text((tmp_path / "run" / "model" / "train_config.json").read_text())
    bare = CCVAE.from_pretrained(tmp_path / "bare")
    with torch.no_grad():
        bare.kind_basis.zero_()
        bare.style_prior_loc.zero_()
    bare.save_pretrained(tmp_path / "bare")
    assert fit_prior.main([str(tmp_path / "bare")]) == 0
    refit = CCVAE.from_pretrained(tmp_path / "bare").state_dict()
    assert all(torch.allclose(refit[k], fitted[k], atol=1e-5) for k in fitted)
    assert fit_prior.main([str(tmp_path / "nowhere")]) == 2 and "error: " in capsys.readouterr().err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == json.loads((tmp_path / "run" / "model" / "metrics.json").read_text())
    assert metrics["num_test_images"] == 40 and 0 <= metrics["conditional_accuracy_standard_prior"] <= 1
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "a full-covariance Gaussian fitted to the aggregate posterior q(z_s) of 80 training faces" in card
    assert "- kinds (`CCVAE.fit_kinds`): resampling also redraws the directions of z_s" in card
    assert f"| mean_accuracy | {metrics['mean_accuracy']:.4g} |" in card and "Not evaluated" not in card


@pytest.mark.parametrize("frac", [1.0, 0.125])
def test_the_celeba_recipe_trains_end_to_end_on_a_celeba_folder(tmp_path, frac):
    from test_data_celeba import make_celeba

    root = make_celeba(tmp_path / "celeba")  # 18 train, 6 val, 6 test images
    out = tmp_path / "run"
    assert trainer.cli(["--recipe", "celeba", "--root", str(root), "--limit", "16", "--epochs", "1",
                        "--sup-frac", str(frac), "--batch-size", "8", "--k", "4", "--latent-dim", "24",
                        "--set", "val_limit=6", "--fit-style-prior", "16", "--eval-limit", "6", "--threads", "1",
                        "--out", str(out)]) == 0
    model = CCVAE.from_pretrained(out / "model")
    assert model.label_names == PAPER_LABELS and len(PAPER_LABELS) == 18
    assert model.config["fitted_style_prior"] and model.latent_dim == 24
    settings = saved_config(out / "model")
    assert settings["dataset"] == "celeba" and settings["root"] == str(root)
    assert changed(load_recipe("celeba"), TrainConfig(**settings)) == {
        "root": str(root), "limit": 16, "epochs": 1, "batch_size": 8, "k": 4, "latent_dim": 24, "val_limit": 6,
        "fit_style_prior": 16, "eval_limit": 6, **({"sup_frac": frac} if frac < 1 else {})}
    log = log_of(out)
    # f = 1: 16 faces in batches of 8; f = 0.125: 2 labelled, 14 unlabelled, so 2 steps, each with an
    # unlabelled batch and a labelled batch of 8 cycled from the 2
    assert log[0]["step"] == 2 and 0 <= log[0]["val_accuracy"] <= 1
    assert ("unsup_loss" in log[0]) == (frac < 1) and "sup_loss" in log[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["mean_accuracy"] <= 1 and set(metrics["per_label_accuracy"]) == set(PAPER_LABELS)
    assert metrics["num_test_images"] == 6 and "intervention_success" not in metrics  # no oracle for CelebA
    assert "CCVAE: celeba (18 labels" in (out / "model" / "README.md").read_text()


# --- using a trained run ---------------------------------------------------------------------------

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
                "intervention_leakage", "conditional_accuracy", "diversity", "per_label"):
        assert key in m, key
    assert 0 <= m["mean_accuracy"] <= 1 and m["psnr"] > 0 and m["num_test_images"] == 60
    assert set(m["intervention_success"]) == set(m["per_label_accuracy"])
    assert all({"variance", "style_variance", "ratio", "oracle_present"} <= set(d) for d in m["diversity"].values())
    # one yardstick for every label: resampling a style latent, averaged over the active ones
    assert len({d["style_variance"] for d in m["diversity"].values()}) == 1
    # without the oracle: the metrics of any dataset only
    assert evaluate.main(evaluate.parse_args([str(tiny_run / "model"), "--limit", "20", "--no-oracle",
                                              "--json", str(out)])) == 0
    assert "intervention_success" not in json.loads(out.read_text())


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


def test_publish_dry_run_writes_a_loadable_folder_with_its_settings(tiny_run, tmp_path, capsys):
    out = tmp_path / "upload"
    assert publish.main(publish.parse_args([str(tiny_run), "--repo-id", "someone/ccvae-test", "--dry-run", str(out)])) == 0
    assert {"config.json", "model.safetensors", "README.md", "traversal.png", CONFIG_NAME} <= {
        p.name for p in out.iterdir()}
    assert saved_config(out) == saved_config(tiny_run)  # what the card's command trains from
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
    assert "is not of the form USER/NAME" in capsys.readouterr().err
    assert publish.main(publish.parse_args([str(tmp_path / "empty"), "--repo-id", "a/b", "--dry-run", str(tmp_path / "o")])) == 1
    assert "holds no model" in capsys.readouterr().err
