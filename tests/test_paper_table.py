"""paper.table: the cells, their commands, skipping the cells done, and the table and figure they make."""
import json
import math
import subprocess

import pytest
from PIL import Image

from paper import table


def write_cell(work, name, accuracy, **more):
    folder = work / name
    folder.mkdir(parents=True)
    metrics = {"mean_accuracy": accuracy, "per_label_accuracy": {"Smiling": accuracy}, **more}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "cell.json").write_text(json.dumps({"seconds": 12.5, "runs": 1}))


def test_the_cells_cover_every_method_fraction_and_seed_once_seed_zero_first():
    cells = table.cells()
    assert len(cells) == len(table.METHODS) * sum(len(s) for s in table.SEEDS.values()) == 32
    assert len({c.name for c in cells}) == len(cells)
    first = cells[:len(table.METHODS) * len(table.FRACTIONS)]
    assert {c.seed for c in first} == {0} and {c.frac for c in first} == set(table.FRACTIONS)


def test_steps_per_epoch_count_as_the_trainer_does():
    # 200 labelled + 49,800 unlabelled: a pass over the unlabelled ones; f = 1: over the 50,000 labelled
    assert table.steps_per_epoch(0.004) == math.ceil(49_800 / 64) == 779
    assert table.steps_per_epoch(1.0) == math.ceil(50_000 / 64)


def test_commands_share_one_budget_and_a_ccvae_cell_cut_short_resumes(tmp_path):
    ccvae = table.command(table.Cell("ccvae", 0.06, 1), tmp_path / "c", threads=1)
    assert ccvae[1:3] == ["-m", "train"] and "--recipe" in ccvae
    assert ccvae[ccvae.index("--epochs") + 1] == str(table.EPOCHS)
    assert "--intervention-from" not in ccvae  # the recipe's fraction of the run applies at any length
    assert ccvae[ccvae.index("--sup-frac") + 1] == "0.06" and ccvae[ccvae.index("--seed") + 1] == "1"
    m2 = table.command(table.Cell("m2", 0.06, 1), tmp_path / "m", threads=None)
    assert m2[1:3] == ["-m", "paper.m2"] and m2[m2.index("--epochs") + 1] == str(table.EPOCHS)
    only = table.command(table.Cell("labels_only", 0.06, 1), tmp_path / "l", threads=None)
    assert int(only[only.index("--steps") + 1]) == table.EPOCHS * table.steps_per_epoch(0.06)
    (tmp_path / "c" / "state").mkdir(parents=True)
    resumed = table.command(table.Cell("ccvae", 0.06, 1), tmp_path / "c", threads=1)
    assert "--resume" in resumed and "--recipe" not in resumed


def test_a_cell_with_metrics_is_skipped_and_a_failed_one_is_named(tmp_path, monkeypatch):
    write_cell(tmp_path, "m2-f0.2-s0", 0.9)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell must not train again")
    monkeypatch.setattr(subprocess, "call", no_training)
    assert table.run_cell(table.Cell("m2", 0.2, 0), tmp_path, threads=1)["mean_accuracy"] == 0.9
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: 3)
    with pytest.raises(RuntimeError, match="m2-f1-s0 failed \\(exit 3\\)"):
        table.run_cell(table.Cell("m2", 1.0, 0), tmp_path, threads=1)


def test_the_table_averages_seeds_reports_ccvae_editing_and_draws_the_figure(tmp_path):
    work = tmp_path / "work"
    for seed, acc in enumerate([0.90, 0.92, 0.94]):
        write_cell(work, f"ccvae-f0.004-s{seed}", acc, intervention_success_consistent_mean=0.8 + seed,
                   intervention_leakage_mean=0.01, characteristic_coverage_mean=0.4, style_kept_mean=0.9)
    write_cell(work, "majority-f1-s0", 0.78)
    out = tmp_path / "figs" / "supervision.json"
    assert table.main(["--work", str(work), "--out", str(out), "--summary-only"]) == 0
    result = json.loads(out.read_text())
    row = result["mean_test_accuracy"]["ccvae"]["0.004"]
    assert row["seeds"] == [0, 1, 2] and row["mean"] == pytest.approx(0.92) and row["sd"] == pytest.approx(0.02)
    assert result["mean_test_accuracy"]["majority"]["1"]["sd"] is None
    assert result["ccvae_editing"] == {"0.004": {"interventions_app": 0.8, "leakage": 0.01,
                                                 "characteristic_coverage": 0.4, "style_kept": 0.9}}
    assert result["cells_done"] == 4 and result["cells"]["ccvae-f0.004-s1"]["seconds"] == 12.5
    assert result["paper_celeba"]["ccvae"]["0.004"] == 0.832
    with Image.open(out.with_suffix(".png")) as figure:
        assert figure.size[0] > 300


def test_an_unknown_cell_filter_is_one_line(tmp_path, capsys):
    assert table.main(["--work", str(tmp_path), "--out", str(tmp_path / "t.json"), "--only", "nothing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no cell matches") and err.count("\n") == 1


def test_a_fresh_checkout_resumes_from_the_cells_the_json_holds(tmp_path, monkeypatch):
    work, out = tmp_path / "work", tmp_path / "supervision.json"
    write_cell(work, "majority-f0.004-s0", 0.78)
    assert table.main(["--work", str(work), "--out", str(out), "--summary-only"]) == 0
    ran = []
    monkeypatch.setattr(table, "run_cell", lambda cell, *a, **k: ran.append(cell.name) or {"mean_accuracy": 0.5})
    monkeypatch.setattr(table, "write", lambda work, out: table.summarise(table.done_cells(out, work)))
    # the work folders are gone (a new checkout); the committed JSON says which cells are done
    assert table.main(["--work", str(tmp_path / "fresh"), "--out", str(out), "--only", "majority-f0.004"]) == 0
    assert ran == ["majority-f0.004-s1", "majority-f0.004-s2"]
    kept = table.summarise(table.done_cells(out, tmp_path / "fresh"))
    assert kept["mean_test_accuracy"]["majority"]["0.004"]["accuracy"] == [0.78]
