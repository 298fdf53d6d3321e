"""Your own images end to end, as a new user meets them: a messy folder (PNGs and 160x200 JPEGs,
a CSV with Windows line endings that labels some images fully, some partly and some not at all,
images it does not list, a text file named .png) trains, evaluates, opens in the app and
publishes, with nothing dropped unnamed and nothing private in the upload."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from ccvae import CCVAE, CheckpointError, objective
from train import evaluate, publish, trainer

TINY = ["--batch-size", "16", "--k", "8", "--latent-dim", "10", "--fit-style-prior", "30",
        "--intervention-weight", "10", "--threads", "1"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CCVAE_CACHE", str(tmp_path_factory.getbasetemp() / "data-cache"))


def messy_folder(root, *, mistakes=False):
    """72 images: 48 PNGs and 24 JPEGs (160x200); the CSV labels 30 fully, 8 partly, leaves 10
    rows empty and does not list 24; an unlisted text file named notes.png. With mistakes the CSV
    also has a 'yes', a '-1', a duplicated row, a missing file and the text file."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["filename,glasses,smile,hat"]
    for i in range(72):
        name = f"face{i:02d}." + ("jpg" if i % 3 == 0 else "png")
        glasses, smile, hat = i % 2, (i // 2) % 2, int(i % 5 == 0)
        image = np.full((200, 160, 3), 90, np.uint8)  # each label draws a mark, plus noise
        image[40:60, 20:140] = 250 if glasses else 90
        image[140:160, 40:120] = 20 if smile else 90
        image[:30] = 200 if hat else 90
        image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / name)
        if i < 30:
            rows.append(f"{name},{glasses},{smile},{hat}")
        elif i < 38:
            rows.append(f"{name},{glasses},,")  # partly labelled
        elif i < 48:
            rows.append(f"{name},,,")  # listed, nothing known
    (root / "notes.png").write_text("this is not an image")
    if mistakes:
        rows[3] = rows[3].rsplit(",", 1)[0] + ",yes"
        rows[5] = rows[5].rsplit(",", 1)[0] + ",-1"
        rows += [rows[7], "face99.png,1,0,0", "notes.png,0,0,1"]
    (root / "labels.csv").write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return root


def train(tmp_path, capsys, *extra):
    root = messy_folder(tmp_path / "my images")
    code = trainer.cli(["--dataset", "folder", "--root", str(root), "--labels", str(root / "labels.csv"), *TINY,
                        "--out", str(tmp_path / "runs" / "mine"), *extra])
    return code, capsys.readouterr().err


def test_every_mistake_of_the_csv_is_named_with_its_line_in_one_run(tmp_path, capsys):
    root = messy_folder(tmp_path / "my images", mistakes=True)
    code = trainer.cli(["--dataset", "folder", "--root", str(root), "--labels", str(root / "labels.csv"), *TINY,
                        "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert "5 problem(s)" in err
    for line in ("line 4, column 'hat': value 'yes'", "line 6, column 'hat': value '-1'",
                 "line 50: face06.jpg is listed again (first on line 8)", "line 51: face99.png not found in",
                 "line 52: notes.png is not an image"):
        assert line in err, line
    assert "damaged" not in err and not (tmp_path / "run").exists()


def test_a_messy_folder_trains_evaluates_opens_and_publishes_privately(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer, "majority_accuracy", lambda *a: 1.0)  # validation never beats it here
    partial = []
    real = objective.partially_supervised
    monkeypatch.setattr(objective, "partially_supervised", lambda *a, **k: partial.append(a[2]) or real(*a, **k))
    code, err = train(tmp_path, capsys, "--epochs", "2", "--intervention-from", "0.5")
    run = tmp_path / "runs" / "mine"
    assert code == 0, err
    # 1. every image is used; the first lines count them (train split: the hash's 90 %)
    counts = re.search(r"training images \(folder, train split\): (\d+) labelled, (\d+) partly labelled, (\d+) "
                       r"unlabelled, (\d+) unreadable \(skipped[^)]*\); ([\d.]+)% of the label cells known", err)
    assert counts, err
    full, part, none, unreadable = map(int, counts.groups()[:4])
    from train.data import load_dataset
    train_split = load_dataset("folder", "train", root=tmp_path / "my images",
                               labels_csv=tmp_path / "my images" / "labels.csv", progress=False)
    known = train_split.labels >= 0
    assert (full, part, none) == (known.all(1).sum(), (known.any(1) & ~known.all(1)).sum(), (~known.any(1)).sum())
    assert full + part + none == len(train_split) and part > 0 and none > 20  # unlisted and empty rows unlabelled
    assert unreadable == ("notes.png" in {f for f, _ in train_split.skipped})
    assert ("unreadable (skipped: notes.png)" in err) == bool(unreadable)
    # partly labelled rows enter the labelled stream with their unknown cells
    assert partial and any(bool((y < 0).any()) for y in partial)
    # 3. a 2-epoch run keeps the intervention term it asked for (from half way)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert "sup_intervention_accuracy" not in log[0] and "sup_intervention_accuracy" in log[1]
    # 7. a validation accuracy at the majority guess is said (once, then every 10th epoch)
    assert err.count("is at the majority guess (1.000, every label at its commoner value)") == 1
    assert log[1]["val_majority_accuracy"] == 1.0
    # the run ends saying where the model is and what to run next
    assert f"the model is in {run / 'model'}" in err
    for command in (f"python -m train.evaluate {run}", f"python app.py --checkpoint {run}",
                    f"python -m train.publish {run} --repo-id USER/NAME --dry-run DIR"):
        assert command in err, command
    # 6. the card: the labelled fraction as counted, the faces the prior saw, the command that ran
    card = (run / "model" / "README.md").read_text()
    assert f"f = {round(known.mean(), 3)}" in card and "f = 1.0" not in card
    faces = min(30, len(train_split))
    assert f"q(z_s) of {faces} training faces" in card
    command = next(line for line in card.splitlines() if line.startswith("python -m train"))
    assert "--recipe" not in command and "--root IMAGES_DIR --labels LABELS.csv" in command
    assert str(tmp_path) not in card

    # 4. one model argument: the run folder opens in the app, evaluates and publishes
    import app

    model, folder, notice = app.load_model(str(run))
    assert folder == run / "model" and notice is None and model.label_names == ["glasses", "smile", "hat"]
    with pytest.raises(SystemExit, match=r"^error: --checkpoint: .*holds no model"):
        app.main(app.parse_args(["--checkpoint", str(tmp_path)]))
    with pytest.raises(CheckpointError, match="holds no model"):
        CCVAE.from_pretrained(tmp_path)
    out = tmp_path / "metrics.json"
    assert evaluate.main(evaluate.parse_args([str(run), "--json", str(out)])) == 0  # paths from train_config.json
    captured = capsys.readouterr()
    metrics = json.loads(out.read_text())
    n = metrics["num_test_images"]
    assert 0 < n < 500 and f"warning: only {n} test images (under 500): these figures are noisy" in captured.err
    assert evaluate.main(evaluate.parse_args([str(tmp_path), "--json", str(out)])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no model" in err and "Traceback" not in err
    assert publish.main(publish.parse_args([str(tmp_path), "--repo-id", "a/b", "--dry-run", str(tmp_path / "x")])) == 1
    assert "holds no model" in capsys.readouterr().err

    # 5. the publish dry run: no figure of the user's images, no local path; each file listed
    upload = tmp_path / "upload"
    assert publish.main(publish.parse_args([str(run), "--repo-id", "me/mine", "--dry-run", str(upload)])) == 0
    listing = capsys.readouterr().out
    assert {p.name for p in upload.rglob("*") if p.is_file()} == {
        "config.json", "model.safetensors", "README.md", "train_config.json", "metrics.json"}
    for name in ("traversal.png", "samples/reconstruction.png", "samples/traversal.png", "samples/diversity.png"):
        assert f"(not uploaded) {name}  [your images: left out; --include-samples uploads it]" in listing, listing
    for p in upload.rglob("*"):
        if p.suffix in (".json", ".md"):
            text = p.read_text()
            assert str(tmp_path) not in text and "my images" not in text, p
    settings = json.loads((upload / "train_config.json").read_text())
    assert settings["root"] == "IMAGES_DIR" and settings["labels_csv"] == "LABELS.csv"
    CCVAE.from_pretrained(upload)
    # asked for, the figures go, flagged
    with_samples = tmp_path / "with-samples"
    assert publish.main(publish.parse_args([str(run), "--repo-id", "me/mine", "--dry-run", str(with_samples),
                                            "--include-samples"])) == 0
    listing = capsys.readouterr().out
    assert "  samples/reconstruction.png  [your images: uploaded, as --include-samples asks]" in listing
    assert (with_samples / "traversal.png").is_file() and (with_samples / "samples" / "reconstruction.png").is_file()


def test_the_majority_guess_is_each_labels_commoner_training_value_scored_on_known_cells():
    train_labels = np.array([[1, 0], [1, 1], [0, 0], [-1, -1]])
    val_labels = np.array([[1, 0], [0, -1]])
    assert trainer.majority_accuracy(train_labels, val_labels) == pytest.approx((1 / 2 + 1 / 1) / 2)
    assert trainer.majority_accuracy(train_labels, np.full((2, 2), -1)) is None  # nothing to score
