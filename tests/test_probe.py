"""Linear probes of the generating factors from the latents (train.probe)."""
import numpy as np
import pytest
import torch

from ccvae import editing
from train import batches
from train.probe import (encoder_stages, factor_target, format_added, format_usage, held_out_r2, kept_groups, label_added,
                         label_groups, label_kept, main, parse_args, probe, refit_latents, region_errors, ridge_r2,
                         style_usage)


def test_r2_is_near_one_for_a_linear_function_and_near_zero_for_noise():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 5))
    t = z @ np.array([1.0, -2.0, 0.0, 0.5, 0.0]) + 3.0 + 0.01 * rng.normal(size=4000)
    assert held_out_r2(z[:3000], t[:3000], z[3000:], t[3000:]) > 0.999
    noise = rng.normal(size=4000)
    assert abs(held_out_r2(z[:3000], noise[:3000], z[3000:], noise[3000:])) < 0.02
    # two outputs pooled: one explained, one noise -> about half of the variance
    both = np.stack([t / t.std(), noise / noise.std()], 1)
    assert held_out_r2(z[:3000], both[:3000], z[3000:], both[3000:]) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="more fitted faces than features"):
        held_out_r2(z[:5], t[:5], z[5:10], t[5:10])


def test_targets_of_kinds_and_hues():
    kinds = factor_target("earring_style", np.array([0.0, 2.0, 1.0, 2.0]))
    assert kinds.shape == (4, 3) and (kinds.sum(1) == 1).all() and (kinds[1] == kinds[3]).all()
    hue = factor_target("hat_hue", np.array([0.0, 1.0, 0.5]))
    assert hue.shape == (3, 2) and np.allclose(hue[0], hue[1]) and np.allclose(hue[2], [-1, 0])
    assert factor_target("earring_size", np.array([0.2, 0.7])).tolist() == [0.2, 0.7]


def test_probe_reads_a_factor_only_where_it_is_drawn_and_names_its_latent():
    rng = np.random.default_rng(1)
    n = 3000
    z = rng.normal(size=(n, 6))  # z_c = columns 0, 1; z_s = columns 2..5
    earrings = rng.random(n) < 0.4
    size = np.where(earrings, 0.5 + 0.1 * z[:, 3], rng.random(n))  # carried by style latent 1 where drawn
    labels = np.stack([earrings, rng.random(n) < 0.5], 1).astype(np.int64)
    factors = {"earring_size": size, "jaw": rng.random(n), "tie_hue": rng.random(n)}
    labels[:, 1] = 0
    labels[:20, 1] = 1  # ties on 20 faces only: too few to fit 6 latents and test
    rows = {r["factor"]: r for r in probe(z, factors, labels, ["Wearing_Earrings", "Wearing_Necktie"],
                                          num_characteristic=2, latent_names=["A", "B", "s0", "s1", "s2", "s3"],
                                          names=["earring_size", "jaw", "tie_hue"])}
    ear = rows["earring_size"]
    assert ear["faces"] == earrings.sum() and ear["shown_when"] == ("Wearing_Earrings", 1)
    assert ear["r2"] > 0.99 and ear["r2_style"] > 0.99 and abs(ear["r2_characteristic"]) < 0.05
    assert ear["best_latent"] == "s1" and ear["best_r2"] > 0.99
    assert rows["jaw"]["faces"] == n and abs(rows["jaw"]["r2"]) < 0.05  # noise: nothing to read
    assert rows["tie_hue"]["faces"] == 20 and rows["tie_hue"]["r2"] is None and rows["tie_hue"]["best_latent"] is None
    constant = probe(z, {"jaw": np.full(n, 0.3)}, labels, ["Wearing_Earrings", "Wearing_Necktie"], num_characteristic=2,
                     latent_names=["A", "B", "s0", "s1", "s2", "s3"], names=["jaw"])[0]
    assert constant["best_latent"] is None and constant["r2"] != constant["r2"]  # NaN: no variance to explain


def test_cli_prints_a_row_per_factor_and_rejects_bad_input(tmp_path, monkeypatch, capsys):
    from conftest import tiny_model

    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path / "cache"))
    tiny_model(labels=("Eyeglasses", "Wearing_Earrings", "Black_Hair"), latent_dim=6,
               image_size=32).save_pretrained(tmp_path / "m")
    tiny_model().save_pretrained(tmp_path / "m16")  # 16x16: no synthetic faces that small
    assert main(parse_args([str(tmp_path / "m"), "--n", "300", "--factors", "earring_size", "pos_x",
                            "--regions", "--region-faces", "4"])) == 0
    out = capsys.readouterr().out
    regions = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines()
               if line.startswith(("| Eyeglasses", "| Wearing_Earrings", "| Black_Hair"))}
    assert set(regions) == {"Eyeglasses", "Wearing_Earrings", "Black_Hair"}
    hair = regions.pop("Black_Hair")  # drawn from hair_class, not from its flag: no pixels of its own
    assert int(hair[2]) == 4 and hair[3].strip() == "0" and hair[6].strip() == "—"
    assert all(int(r[2]) == 4 and float(r[3]) > 0 and float(r[6]) <= 1 for r in regions.values())
    rows = [line for line in out.splitlines() if line.startswith("| earring_size") or line.startswith("| pos_x")]
    assert len(rows) == 2 and "Wearing_Earrings = 1" in rows[0]
    r2 = float(rows[1].split("|")[4])
    assert -1 < r2 <= 1
    usage = [line for line in out.splitlines() if line.startswith("style latents z_s:")]
    assert len(usage) == 1 and " of 3 active" in usage[0]  # latent_dim 6 - 3 labels
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--factors", "earring_colour"])
    assert "unknown factor(s) ['earring_colour']" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "missing")])) == 2
    assert "error:" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m16"), "--n", "300"])) == 2
    assert "image_size must be 32, 64, 128 or 256" in capsys.readouterr().err


def test_region_errors_score_a_label_drawn_exactly_as_captured_and_one_left_out_as_not():
    rng = np.random.default_rng(2)
    without = rng.random((4, 8, 8, 3)).astype(np.float32)
    x = without.copy()
    x[:, 2:4, 5:7] = [1.0, 0.8, 0.0]  # a 2x2 earring on every face (4 pixels)
    exact = region_errors(x, without, x)
    assert exact["pixels"] == 4 and exact["captured"] == 1 and exact["error_share"] == 0
    left_out = region_errors(x, without, without)
    assert left_out["captured"] == 0 and left_out["error_share"] == 1
    blurry = np.clip(x + 0.05 * rng.normal(size=x.shape), 0, 1)
    half = blurry.copy()
    half[:, 2:4, 5:7] = (x[:, 2:4, 5:7] + without[:, 2:4, 5:7]) / 2  # drawn at half strength
    r = region_errors(x, without, half)
    assert abs(r["captured"] - 0.75) < 1e-5  # half the difference left, a quarter of its squared error
    assert r["mse_ratio"] > 1 and 0 < r["error_share"] < 1


def test_style_usage_counts_the_latents_that_vary_and_sums_their_kl():
    rng = np.random.default_rng(2)
    loc = np.c_[rng.normal(size=(500, 2)) * 2, np.full(500, 0.3), 0.05 * rng.normal(size=500)]  # 2 used, 2 not
    scale = np.c_[np.full((500, 2), 0.05), np.ones(500), np.full(500, 0.9)]
    kl = 0.5 * (scale ** 2 + loc ** 2 - 1) - np.log(scale)
    u = style_usage(loc, kl)
    assert u["dims"] == 4 and u["active"] == 2
    assert u["kl"] == sorted(u["kl"], reverse=True) and u["kl_total"] == pytest.approx(kl.mean(0).sum())
    assert u["kl"][0] > 2 and u["kl"][-1] < 0.1  # the used latents pay nats, the constant one ~nothing
    line = format_usage(u)
    assert line.startswith("style latents z_s: 2 of 4 active") and f"{u['kl_total']:.1f} in all" in line
    assert format_usage(style_usage(np.zeros((3, 0)), np.zeros((3, 0)))) == "style latents z_s: none"


class _Stub:
    """An oracle that sees the label where an image's mean brightness is above 0.5."""
    label_names = ["Smiling", "Wearing_Earrings"]

    def predict(self, x):
        bright = x.mean((1, 2, 3)) > 0.5
        return torch.stack([~bright, bright], 1)


def test_label_kept_reads_faces_reconstructions_and_resamples_and_repeats_exactly():
    from conftest import tiny_model

    model = tiny_model(labels=("Wearing_Earrings", "Smiling")).eval()
    images = np.zeros((10, 16, 16, 3), dtype=np.uint8)
    images[:4] = 255  # the stub sees the label on the first four faces only
    seen = label_kept(model, _Stub(), images, label="Wearing_Earrings", resamples=3, batch=4)
    assert seen["original"].tolist() == [1.0] * 4 + [0.0] * 6
    assert set(seen) == {"original", "reconstruction", "resamples"} and all(len(v) == 10 for v in seen.values())
    assert np.allclose(seen["resamples"] * 3, np.round(seen["resamples"] * 3))  # a share of 3 draws per face
    again = label_kept(model, _Stub(), images, label="Wearing_Earrings", resamples=3, batch=4)
    assert all((seen[k] == again[k]).all() for k in seen)  # one seeded generator: the same figures
    with pytest.raises(ValueError, match="resamples must be at least 1, got 0"):
        label_kept(model, _Stub(), images, label="Wearing_Earrings", resamples=0)


def test_refit_raises_the_log_joint_touches_no_parameter_and_names_bad_steps():
    from conftest import tiny_model

    model = tiny_model(labels=("Wearing_Earrings", "Smiling")).eval()
    torch.manual_seed(1)
    x, y = torch.rand(5, 3, 16, 16), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    with torch.no_grad():
        z0 = model.encode(x).mode()

    def log_joint(z):
        n_c = model.num_labels
        return (model.log_likelihood(x, model.decode_logits(z)) + model.conditional_prior(y).log_prob(z[:, :n_c]).sum(-1)
                - 0.5 * z[:, n_c:].pow(2).sum(-1))

    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # as label_kept calls it
        z = refit_latents(model, x, y, z0, steps=60)
    assert z.shape == z0.shape and not z.requires_grad
    with torch.no_grad():
        assert (log_joint(z) > log_joint(z0)).all()  # every face on its own is explained better
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="refit steps must be at least 1, got 0"):
        refit_latents(model, x, y, z0, steps=0)


def test_label_kept_with_refit_adds_the_refitted_reading_and_both_psnrs():
    from conftest import tiny_model

    model = tiny_model(labels=("Wearing_Earrings", "Smiling")).eval()
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    labels = np.array([[1, 0]] * 6, dtype=np.float32)
    seen = label_kept(model, _Stub(), images, label="Wearing_Earrings", resamples=2, batch=4, refit=30, labels=labels)
    assert set(seen) == {"original", "reconstruction", "resamples", "refitted", "psnr_reconstruction", "psnr_refitted"}
    assert all(len(v) == 6 for v in seen.values())
    assert (seen["psnr_refitted"] > seen["psnr_reconstruction"]).mean() >= 5 / 6  # fitted to the face itself
    with pytest.raises(ValueError, match=r"refit needs labels of shape \(6, 2\), got None"):
        label_kept(model, _Stub(), images, label="Wearing_Earrings", refit=5)
    with pytest.raises(ValueError, match="refit steps must be at least 0, got -1"):
        label_kept(model, _Stub(), images, label="Wearing_Earrings", refit=-1)


def test_kept_groups_split_every_face_once_per_factor_of_the_label():
    rng = np.random.default_rng(0)
    factors = {"earring_style": rng.integers(0, 3, 90).astype(float), "earring_size": rng.random(90),
               "earring_hue": rng.random(90), "hat_hue": rng.random(90)}
    groups = kept_groups("Wearing_Earrings", factors)
    by_factor = {}
    for name, mask in groups:
        by_factor.setdefault(name.split(" ")[0].rstrip(","), []).append(mask)
    assert set(by_factor) == {"earring_style", "earring_size", "earring_hue"}  # not the hat's hue
    assert len(by_factor["earring_style"]) == 3 and len(by_factor["earring_size"]) == 3
    assert all((np.sum(masks, 0) == 1).all() for masks in by_factor.values())  # each face in exactly one group
    assert [int(m.sum()) for m in by_factor["earring_size"]] == [30, 30, 30]
    from train.data.synthetic import FACTOR_NAMES
    hats = kept_groups("Wearing_Hat", {name: rng.integers(0, 2, 6).astype(float) for name in FACTOR_NAMES})
    assert "hat_style = 0" in [name for name, _ in hats]
    assert not any(name.startswith("hat_hue") for name, _ in hats)  # around the circle: not split


def test_label_groups_split_by_the_other_labels_with_enough_faces_either_way():
    names = ["Wearing_Earrings", "Male", "Smiling", "Bald"]
    labels = np.zeros((40, 4), int)
    labels[:, 0] = 1                  # the label itself: never a group
    labels[:12, 1] = 1                # 12 men, 28 women: a group
    labels[:35, 2] = 1                # 35 smiling, 5 not: too few without it
    labels[:3, 3] = 1                 # 3 bald: too few with it
    groups = label_groups("Wearing_Earrings", labels, names)
    assert [name for name, _ in groups] == ["with Male"]
    assert groups[0][1].sum() == 12 and groups[0][1][:12].all()
    assert [n for n, _ in label_groups("Wearing_Earrings", labels, names, min_faces=3)] == ["with Male", "with Smiling", "with Bald"]
    with pytest.raises(ValueError, match=r"labels must be \(N, 4\) .* got shape \(40, 3\)"):
        label_groups("Male", labels[:, :3], names)


def test_cli_kept_prints_the_oracle_table_and_names_bad_labels(tmp_path, monkeypatch, capsys):
    from conftest import tiny_model

    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path / "cache"))
    tiny_model(labels=("Wearing_Earrings", "Smiling"), image_size=64).save_pretrained(tmp_path / "m")
    assert main(parse_args([str(tmp_path / "m"), "--n", "120", "--factors", "earring_size", "--kept",
                            "Wearing_Earrings", "--resamples", "2"])) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("Wearing_Earrings: the oracle's reading"))
    n = int(head.split("on the ")[1].split(" of 120")[0])
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
    assert 0 < n < 120 and int(rows["all"][2]) == n
    assert float(rows["all"][3]) > 0.9  # the oracle sees the earrings on the faces themselves
    assert sum(int(rows[f"earring_size, {t} third"][2]) for t in ("lowest", "middle", "highest")) == n
    withs = [name for name in rows if name.startswith("with ")]  # the dataset's other labels, not the model's
    assert withs and "with Wearing_Earrings" not in withs and all(0 < int(rows[w][2]) < n for w in withs)
    assert all(0 <= float(rows["all"][c]) <= 1 for c in (3, 4, 5))
    assert main(parse_args([str(tmp_path / "m"), "--n", "60", "--factors", "earring_size", "--kept",
                            "Wearing_Earrings", "--resamples", "1", "--refit", "3"])) == 0
    out = capsys.readouterr().out
    assert "| faces | n | originals | reconstructions | resamples | refitted z |" in out
    assert "refitted z decode to" in out
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--refit", "10"])
    assert "--refit reads the label named by --kept" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--kept", "Earrings"])
    assert "--kept: unknown label 'Earrings'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--kept", "Smiling", "--resamples", "0"])
    assert "--resamples must be at least 1, got 0" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m"), "--n", "20", "--kept", "Wearing_Hat"])) == 2
    assert "has no latent for 'Wearing_Hat'" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m"), "--n", "2", "--factors", "pos_x", "--kept", "Wearing_Earrings"])) == 2
    assert "none of the first 2 test faces has Wearing_Earrings; raise --n" in capsys.readouterr().err
    tiny_model(labels=("Wearing_Earrings",), image_size=32).save_pretrained(tmp_path / "m32")
    assert main(parse_args([str(tmp_path / "m32"), "--n", "20", "--kept", "Wearing_Earrings"])) == 2
    assert "reads 64x64 images, the model draws 32x32" in capsys.readouterr().err


def test_ridge_reads_a_few_features_among_more_features_than_faces_and_not_noise():
    rng = np.random.default_rng(2)
    # 1000 features (more than the 400 fitted rows) that mix 5 factors, as a conv layer's units do
    factors = rng.normal(size=(600, 5))
    x = factors @ rng.normal(size=(5, 1000)) + rng.normal(size=(600, 1000))
    t = factors[:, 0] - 0.5 * factors[:, 1]
    assert ridge_r2(x[:400], t[:400], x[400:], t[400:]) > 0.8
    noise = rng.normal(size=600)
    assert ridge_r2(x[:400], noise[:400], x[400:], noise[400:]) < 0.05
    # a unit all but dead on the fitted rows and alive on the others must not swamp the prediction
    x[:400, 500] = 1e-7 * rng.normal(size=400)
    x[400:, 500] = rng.normal(size=200)
    assert ridge_r2(x[:400], t[:400], x[400:], t[400:]) > 0.8
    with pytest.raises(ValueError, match="val must be a share"):
        ridge_r2(x[:400], t[:400], x[400:], t[400:], val=1.0)
    with pytest.raises(ValueError, match="at least 3 fitted rows"):
        ridge_r2(x[:2], t[:2], x[400:], t[400:])


def test_encoder_stages_are_the_feature_maps_the_hidden_layer_and_the_posterior_mean():
    from conftest import tiny_model

    model = tiny_model(image_size=32).eval()  # channels 8, 8, 8: maps 16x16, 8x8, 4x4; hidden 16
    images = np.random.default_rng(3).integers(0, 256, size=(7, 32, 32, 3), dtype=np.uint8)
    stages = encoder_stages(model, images, batch=3, pool=8)
    assert list(stages) == ["16x16x8 -> 8x8", "8x8x8", "4x4x8", "hidden 16", "z 6"]
    assert [v.shape for v in stages.values()] == [(7, 512), (7, 512), (7, 128), (7, 16), (7, 6)]
    from train import batches
    with torch.no_grad():
        mean = model.encode(batches.to_float(batches.load(images))).mode().numpy()
    assert np.allclose(stages["z 6"], mean, atol=1e-5)


def test_cli_stages_prints_a_row_per_factor_of_the_label_and_names_bad_labels(tmp_path, monkeypatch, capsys):
    from conftest import tiny_model

    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path / "cache"))
    tiny_model(labels=("Wearing_Earrings", "Smiling"), image_size=64).save_pretrained(tmp_path / "m")
    assert main(parse_args([str(tmp_path / "m"), "--n", "200", "--factors", "pos_x", "--stages",
                            "Wearing_Earrings"])) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("where the encoder loses Wearing_Earrings"))
    n = int(head.split("over the ")[1].split(" of 200")[0])
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| earring_")}
    assert set(rows) == {"earring_style", "earring_size", "earring_hue"}
    assert all(int(r[2]) == n for r in rows.values()) and all(len(r) == 1 + 2 + 6 + 1 for r in rows.values())
    assert all(float(v) <= 1 for r in rows.values() for v in r[3:-1])
    assert main(parse_args([str(tmp_path / "m"), "--n", "10", "--factors", "pos_x", "--stages",
                            "Wearing_Earrings"])) == 0
    assert "too few faces to fit a probe (at least 20); raise --n" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--stages", "Earrings"])
    assert "--stages: unknown label 'Earrings'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--stages", "Black_Hair"])
    assert "Black_Hair has no factors of its own" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # its beard factors show on the faces without No_Beard, not on these
        parse_args([str(tmp_path / "m"), "--stages", "No_Beard"])
    assert "No_Beard has no factors of its own" in capsys.readouterr().err


def test_label_added_reads_the_app_edit_on_faces_that_lack_the_label_and_the_cli_splits_it(tmp_path, monkeypatch, capsys):
    from conftest import tiny_model

    model = tiny_model(labels=("Smiling", "Male"), image_size=64).eval()
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():  # the edit the app makes: z_Smiling at the mean of p(z | y = 1)
        z = editing.encode(model, batches.to_float(batches.load(images)))
        loc, _ = model.prior_params()
        red = editing.decode(model, editing.intervene(model, z, 0, loc[1, 0]))[:, 0].mean((1, 2))

    class Judge:  # reads "Smiling" where the red channel's mean is above the edited faces' median
        label_names = ["Smiling"]
        image_size = 64

        def predict(self, x):
            return (x[:, 0].mean((1, 2)) > red.median())[:, None]

    seen = label_added(model, Judge(), images, label="Smiling", batch=2)
    assert set(seen) == {"original", "reconstruction", "added"} and all(v.shape == (5,) for v in seen.values())
    assert seen["added"].tolist() == (red > red.median()).float().tolist() and 0 < seen["added"].sum() < 5
    table = format_added("Smiling", seen, [("with Male", np.array([1, 0, 1, 0, 1], bool))], 9)
    assert table.splitlines()[0].startswith("Smiling: the oracle's reading on the 5 of 9 test faces that lack it")
    assert table.splitlines()[3] == (f"| all | 5 | {seen['original'].mean():.3f} | {seen['reconstruction'].mean():.3f} "
                                     f"| {seen['added'].mean():.3f} |")
    assert table.splitlines()[4].startswith("| with Male | 3 | ")

    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path / "cache"))
    tiny_model(labels=("Bald", "Male"), image_size=64).save_pretrained(tmp_path / "m")
    assert main(parse_args([str(tmp_path / "m"), "--n", "80", "--factors", "pos_x", "--added", "Bald"])) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("Bald: the oracle's reading"))
    n = int(head.split("on the ")[1].split(" of 80")[0])
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| ")}
    assert 0 < n < 80 and int(rows["all"][2]) == n and float(rows["all"][3]) < 0.1  # the faces lack it
    assert "with Male" in rows and all(0 <= float(rows["all"][c]) <= 1 for c in (3, 4, 5))
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path / "m"), "--added", "Baldness"])
    assert "--added: unknown label 'Baldness'" in capsys.readouterr().err
    assert main(parse_args([str(tmp_path / "m"), "--n", "20", "--added", "Smiling"])) == 2
    err = capsys.readouterr().err
    assert "error: --added: " in err and "has no latent for 'Smiling'" in err and "Traceback" not in err
