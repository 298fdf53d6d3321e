"""`python -m train.publish --space`: the Space folder (what it holds, that it boots on its own) and
its deployment, against a faked Hub (HfApi methods replaced; nothing here reaches huggingface.co)."""
import base64
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.repocard import metadata_load
from PIL import Image

import app
from ccvae import CCVAE, editing
from conftest import tiny_model
from train import publish, space

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "checkpoints" / "synthetic-faces"


def run(argv: list[str]) -> int:
    return publish.main(publish.parse_args(argv))


def dry_run(out: Path, *extra: str) -> int:
    return run(["--space", "someone/ccvae-demo", "--dry-run", str(out), *extra])


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def tracked(*paths: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", *paths], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_space_folder_holds_the_demo_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "space"
    assert dry_run(out) == 0
    listing = capsys.readouterr().out
    files = files_under(out)
    assert {"app.py", "app_batching.py", "app_sessions.py", "requirements.txt", "README.md"} <= files
    assert tracked("app_assets", "ccvae") <= files  # every tracked asset and module of the core
    served = {f"checkpoints/synthetic-faces/{n}" for n in ("config.json", "model.safetensors", "README.md")}
    examples = {f"checkpoints/synthetic-faces/examples/{p.name}" for p in (BUNDLED / "examples").glob("*.png")}
    assert served | examples <= files and len(examples) == 12
    # no tests, training code, docs, scripts, judge networks or training logs
    assert not {f for f in files if f.split("/")[0] in ("tests", "train", "docs", "scripts", "benchmarks", ".ci")}
    assert {f.split("/")[1] for f in files if f.startswith("checkpoints/")} == {"synthetic-faces"}
    assert not {f for f in files if f.endswith(("training-log.jsonl", "metrics.json", "traversal.png", ".pyc"))}
    sizes = {f: (out / f).stat().st_size for f in files}
    assert sum(sizes.values()) <= 10 * 2**20
    for f, size in sizes.items():  # the listing names every file with its size, then the total
        assert f"{size:,}  {f}" in listing
    assert f"{sum(sizes.values()):,}  bytes in {len(files)} files" in listing
    assert "CCVAE_CHECKPOINT: not set" in listing
    # the Space's configuration is the README's front matter; the served model is the bundled one, loadable
    assert metadata_load(out / "README.md") == metadata_load(REPO / "README.md")
    weights = out / "checkpoints" / "synthetic-faces" / "model.safetensors"
    assert weights.read_bytes() == (BUNDLED / "model.safetensors").read_bytes()
    CCVAE.from_pretrained(out / "checkpoints" / "synthetic-faces")
    # a folder that is not empty is refused: the dry run writes exactly the Space, nothing left from before
    assert dry_run(out) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an empty folder" in err


def test_space_of_a_hub_model_copies_no_weights_and_names_the_variable(tmp_path, capsys):
    out = tmp_path / "space"
    assert dry_run(out, "--checkpoint", "someone/ccvae-faces") == 0
    assert "CCVAE_CHECKPOINT: someone/ccvae-faces" in capsys.readouterr().out
    files = files_under(out)
    assert "app.py" in files and not [f for f in files if f.startswith("checkpoints/") or f.endswith(".safetensors")]
    assert "someone/ccvae-faces" in (out / "README.md").read_text()


def test_space_of_a_local_model_serves_it_from_the_default_path(tmp_path, capsys):
    model_dir = tmp_path / "mine"
    tiny_model().save_pretrained(model_dir)
    (model_dir / "examples").mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(model_dir / "examples" / "a.png")
    (model_dir / "training-log.jsonl").write_text("{}\n")
    out = tmp_path / "space"
    assert dry_run(out, "--checkpoint", str(model_dir)) == 0
    served = out / "checkpoints" / "synthetic-faces"
    assert {p.name for p in served.iterdir()} == {"config.json", "model.safetensors", "README.md", "examples"}
    assert (served / "config.json").read_text() == (model_dir / "config.json").read_text()
    assert CCVAE.from_pretrained(served).label_names == tiny_model().label_names
    assert dry_run(tmp_path / "other", "--checkpoint", str(tmp_path / "nowhere" / "x" / "y")) == 1
    assert "is neither a model folder nor a Hub id" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert dry_run(tmp_path / "other", "--checkpoint", str(tmp_path / "empty")) == 1
    assert "lacks config.json, model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()  # refused before anything was written


def test_a_folder_importing_the_training_code_is_refused(tmp_path):
    (tmp_path / "ccvae").mkdir()
    (tmp_path / "ccvae" / "__init__.py").write_text("from . import model\nimport torch\n")
    space.check_imports(tmp_path)  # relative and third-party imports are fine
    (tmp_path / "app.py").write_text("import os\nfrom train.publish import main\n")
    with pytest.raises(space.SpaceError, match="app.py imports train, which the Space does not get"):
        space.check_imports(tmp_path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(data_url: str | dict) -> Image.Image:
    """A PNG data URL as an image; the edited face comes as an update carrying its start face too."""
    if isinstance(data_url, dict):
        data_url = data_url["value"]
    header, _, data = data_url.partition(",")
    assert header == "data:image/png;base64", data_url[:40]
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def probability(prob_html: str) -> float:
    return float(prob_html.split("q(present) = <b>")[1].split("<")[0])


def test_space_folder_boots_on_its_own_and_serves_faces(tmp_path):
    """The dry-run folder, copied outside the repository, started with `python app.py` and the
    repository off the path, answers /random_face and /slide_Smiling with faces."""
    from gradio_client import Client

    assert dry_run(tmp_path / "out") == 0
    copy = shutil.copytree(tmp_path / "out", tmp_path / "elsewhere" / "space")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CCVAE_CHECKPOINT")}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False")
    # from the copy, ccvae is the copy's and the repository (train) cannot be imported
    where = subprocess.run([sys.executable, "-c", "import importlib.util, ccvae; "
                            "print(importlib.util.find_spec('train'), ccvae.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0] == "None" and Path(where[1]).is_relative_to(copy), where
    log = tmp_path / "app.log"
    with open(log, "w") as sink:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=copy, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 150
        while True:
            assert process.poll() is None, f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"app.py did not answer within 150 s:\n{log.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        model = CCVAE.from_pretrained(copy / "checkpoints" / "synthetic-faces")
        i, labels = model.label_names.index("Smiling"), len(model.label_names)
        client = Client(url, verbose=False)
        face = client.predict(api_name="/random_face")  # input, reconstruction, edited, sliders, probs, status
        assert png(face[2]).size == (model.image_size, model.image_size)
        was_smiling = probability(face[3 + labels + i]) > 0.5
        absent, present = map(float, editing.traversal_range(model, i))
        low, high, _ = app.slider_range(min(absent, present), max(absent, present))
        target = min(max(round(absent if was_smiling else present, 4), low), high)
        edited, prob, *_ = client.predict(target, api_name="/slide_Smiling")
        assert png(edited).size == (model.image_size, model.image_size)
        assert png(edited).tobytes() != png(face[2]).tobytes()  # the slide changed this session's face
        assert (probability(prob) > 0.5) != was_smiling  # ... to the other side of Smiling
    finally:
        process.terminate()
        process.wait(timeout=30)


# ---- deployment against a faked Hub ---------------------------------------------------------


def http_error(status: int) -> HfHubHTTPError:
    return HfHubHTTPError(f"{status} Client Error: from the fake Hub\nmore lines",
                          response=SimpleNamespace(status_code=status, headers={}, request=None))


@pytest.fixture
def hub(monkeypatch):
    """HfApi with every method the deployment calls replaced: `hub.calls` records them in order,
    `hub.spaces` / `hub.models` / `hub.variables` are the fake Hub's state, `hub.fail` maps a method
    name to the exception it raises."""
    state = SimpleNamespace(calls=[], spaces=set(), models={"someone/ccvae-faces"}, variables={}, fail={},
                            uploaded=None)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")

    def method(name, body):
        def call(self, *args, **kwargs):
            state.calls.append((name, args, kwargs))
            if name in state.fail:
                raise state.fail[name]
            return body(*args, **kwargs)
        monkeypatch.setattr(huggingface_hub.HfApi, name, call)

    method("repo_exists",
           lambda repo_id, repo_type=None: repo_id in (state.spaces if repo_type == "space" else state.models))
    method("create_repo", lambda repo_id, **kw: state.spaces.add(repo_id))

    def upload_folder(*, folder_path, **kwargs):
        state.uploaded = files_under(Path(folder_path))
        return SimpleNamespace(commit_url="https://hub.example/commit/1")
    method("upload_folder", upload_folder)
    method("add_space_variable", lambda repo_id, key, value, **kw: state.variables.update({key: value}))
    method("get_space_variables", lambda repo_id: dict(state.variables))
    method("delete_space_variable", lambda repo_id, key: state.variables.pop(key))
    return state


def names(hub) -> list[str]:
    return [name for name, _, _ in hub.calls]


def test_deploy_creates_the_space_and_uploads_the_dry_run_folder(hub, tmp_path, capsys):
    assert dry_run(tmp_path / "dry") == 0
    assert run(["--space", "someone/ccvae-demo", "--private"]) == 0
    assert "deployed: https://hub.example/commit/1" in capsys.readouterr().out
    assert names(hub) == ["repo_exists", "repo_exists", "create_repo", "upload_folder"]  # no variable set
    _, args, kwargs = hub.calls[2]
    assert args == ("someone/ccvae-demo",) and kwargs == {"repo_type": "space", "space_sdk": "gradio", "private": True}
    _, _, kwargs = hub.calls[3]
    assert kwargs["repo_id"] == "someone/ccvae-demo" and kwargs["repo_type"] == "space"
    assert kwargs["delete_patterns"] == "*"  # the Space then holds exactly the folder
    assert hub.uploaded == files_under(tmp_path / "dry")


def test_deploy_of_a_hub_model_sets_the_variable_and_back_to_bundled_removes_it(hub, capsys):
    hub.spaces.add("someone/ccvae-demo")
    assert run(["--space", "someone/ccvae-demo", "--checkpoint", "someone/ccvae-faces"]) == 0
    assert names(hub) == ["repo_exists", "repo_exists", "add_space_variable", "upload_folder"]  # updated, not created
    assert hub.variables == {"CCVAE_CHECKPOINT": "someone/ccvae-faces"}
    assert not [f for f in hub.uploaded if f.endswith(".safetensors")]
    hub.calls.clear()
    assert run(["--space", "someone/ccvae-demo"]) == 0
    assert names(hub) == ["repo_exists", "upload_folder", "get_space_variables", "delete_space_variable"]
    assert hub.variables == {} and "checkpoints/synthetic-faces/model.safetensors" in hub.uploaded


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("case, message", [
    ("no token", "run `hf auth login` or set HF_TOKEN"),
    ("name of a model", "is already a model repository on the Hub; choose another name"),
    ("name taken", "is taken on the Hub"),
    ("bad token", "run `hf auth login` with a token that can write"),
    ("upload refused", "was refused or failed (HfHubHTTPError: 403 Client Error"),
    ("unknown hub model", "is not a model on the Hub"),
])
def test_deploy_errors_are_one_line_that_says_what_to_do(hub, monkeypatch, capsys, case, message):
    argv = ["--space", "someone/ccvae-demo", "--checkpoint", "someone/ccvae-faces"]
    if case == "no token":
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    elif case == "name of a model":
        hub.models.add("someone/ccvae-demo")
    elif case == "name taken":
        hub.fail["create_repo"] = http_error(409)
    elif case == "bad token":
        hub.fail["repo_exists"] = http_error(401)
    elif case == "upload refused":
        hub.fail["upload_folder"] = http_error(403)
    elif case == "unknown hub model":
        argv[-1] = "someone/no-such-model"
    assert run(argv) == 1
    assert message in one_line_error(capsys)
    if case != "upload refused":
        assert "upload_folder" not in names(hub)


def test_deploy_without_network_is_one_line(monkeypatch, capsys):
    """The real HfApi, against a local port where nothing listens."""
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert run(["--space", "someone/ccvae-demo", "--checkpoint", "someone/ccvae-faces"]) == 1
    assert "could not reach the Hugging Face Hub" in one_line_error(capsys)


def test_publish_space_from_the_command_line_fails_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HF_HOME"] = str(tmp_path / "hf")  # no stored token
    done = subprocess.run([sys.executable, "-m", "train.publish", "--space", "someone/ccvae-demo"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: no Hugging Face token") and done.stderr.count("\n") == 1, done.stderr
    done = subprocess.run([sys.executable, "-m", "train.publish", "runs/x", "--space", "someone/ccvae-demo"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "--checkpoint runs/x" in done.stderr
