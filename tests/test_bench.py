"""The training benchmark runs end to end on a tiny setting and reports every figure."""
from train import bench


def test_bench_reports_medians_and_a_paired_ratio(capsys):
    results = bench.main(bench.parse_args(["--device", "cpu", "--batch-size", "4", "--k", "3", "--steps", "1",
                                           "--rounds", "2", "--image-size", "64"]))
    out = capsys.readouterr().out
    for name in ("supervised (one encoder pass)", "unlabelled (exact marginal)",
                 "baseline: supervised, encoder twice", "data pipeline (uint8 -> float batch)"):
        assert results[name] > 0
        assert name in out
    assert results["speedup"] > 0
    assert "median of rounds" in out and "median of 2 round(s) of 1 steps" in out


def test_bench_rejects_zero_rounds():
    import pytest

    with pytest.raises(SystemExit, match="--rounds"):
        bench.main(bench.parse_args(["--device", "cpu", "--rounds", "0", "--batch-size", "2"]))


def test_bench_takes_the_conv_widths_and_names_bad_ones(capsys):
    import pytest

    results = bench.main(bench.parse_args(["--device", "cpu", "--batch-size", "4", "--k", "3", "--steps", "1",
                                           "--rounds", "1", "--channels", "8", "8", "8", "8"]))
    assert results["supervised (one encoder pass)"] > 0
    with pytest.raises(SystemExit, match="64x64 images need 4 conv channels, got \\[8\\]"):
        bench.main(bench.parse_args(["--device", "cpu", "--batch-size", "2", "--channels", "8"]))
