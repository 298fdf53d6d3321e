"""The Hugging Face Space of the demo: the folder it needs, and its deployment through the Hub's HTTP API.

The Hub refuses a `git push` that holds binary files (weights, PNGs) not stored through Xet/LFS;
`HfApi.upload_folder` sends them through Xet/LFS itself. The folder holds app.py with its helpers
and assets, ccvae/, requirements.txt, a README whose front matter is the Space's configuration,
and the served model at checkpoints/synthetic-faces (where app.py looks by default) unless the
model is a Hub id, which the Space reads from its variable CCVAE_CHECKPOINT instead.
"""
from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import huggingface_hub
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.repocard import metadata_load

from ccvae import CCVAE, CheckpointError

REPO = Path(__file__).resolve().parents[1]
BUNDLED_CHECKPOINT = REPO / "checkpoints" / "synthetic-faces"
SERVED = "checkpoints/synthetic-faces"  # app.BUNDLED_CHECKPOINT, relative to app.py
VARIABLE = "CCVAE_CHECKPOINT"  # app.py's --checkpoint default
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
APP_FILES = ("app.py", "app_batching.py", "app_sessions.py", "requirements.txt")
CODE_FOLDERS = ("app_assets", "ccvae")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "README.md")
MAX_BYTES = 50 * 2**20  # the bundled model's Space is 6 MB; a larger folder serves a large model: use a Hub id


class SpaceError(Exception):
    """What went wrong, said for the user in one line; exit status 1."""


def resolve_checkpoint(checkpoint: str) -> tuple[Path | None, str | None]:
    """(local model folder, None) or (None, Hub id) for --checkpoint; a run folder gives its model/."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        folder = path / "model" if (path / "model" / "config.json").is_file() else path
        return folder, None
    if REPO_ID.match(checkpoint) and not path.exists() and not checkpoint.startswith((".", "~")):
        return None, checkpoint
    raise SpaceError(f"--checkpoint {checkpoint!r} is neither a model folder nor a Hub id USER/NAME")


def space_readme(front_matter: str, served: str) -> str:
    return (f"{front_matter}\n\n# CCVAE face editor\n\nEdit a face one characteristic at a time with "
            f"[Characteristic Capturing VAEs](https://arxiv.org/abs/2006.10102) (Joy et al., ICLR 2021). "
            f"Model: {served}.\n\nThis folder was written by `python -m train.publish --space` from the ccvae "
            f"repository; deploy again with that command rather than editing it here.\n")


def check_imports(out: Path) -> None:
    """Refuse a folder whose Python imports a module of the repository left out of it (train, a new helper)."""
    def modules(root: Path) -> set[str]:
        return {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}

    missing = modules(REPO) - modules(out)
    for path in sorted(out.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {name.split(".")[0] for name in names} & missing:
                raise SpaceError(f"{path.relative_to(out)} imports {top}, which the Space does not get; "
                                 f"the demo may import only ccvae and the app's helpers")


def stage(checkpoint: str, out: Path) -> tuple[list[tuple[str, int]], str | None]:
    """Write the Space folder into `out` (new or empty): ([(relative path, bytes)], Hub id to set
    as CCVAE_CHECKPOINT or None). The served local model is loaded from `out` before returning."""
    folder, hub_id = resolve_checkpoint(checkpoint)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SpaceError(f"{out} exists and is not an empty folder; give a new one, so that it holds the Space only")
    meta = metadata_load(REPO / "README.md")
    if not meta or "sdk" not in meta:
        raise SpaceError(f"{REPO / 'README.md'} has no front matter with an sdk: it is the Space's configuration")
    missing = [n for n in CHECKPOINT_FILES[:2] if folder is not None and not (folder / n).is_file()]
    if missing:
        raise SpaceError(f"{folder} is not a model folder: it lacks {', '.join(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    for name in APP_FILES:
        shutil.copy2(REPO / name, out / name)
    for name in CODE_FOLDERS:
        shutil.copytree(REPO / name, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    check_imports(out)
    if folder is not None:
        (out / SERVED).mkdir(parents=True)
        for name in CHECKPOINT_FILES:
            if (folder / name).is_file():
                shutil.copy2(folder / name, out / SERVED / name)
        for example in sorted((folder / "examples").glob("*.png")):  # app.load_examples
            (out / SERVED / "examples").mkdir(exist_ok=True)
            shutil.copy2(example, out / SERVED / "examples" / example.name)
        try:
            CCVAE.from_pretrained(out / SERVED)
        except CheckpointError as e:
            raise SpaceError(f"refusing to deploy a model that does not load: {e}") from e
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    front_matter = readme[:readme.index("\n---", 3) + len("\n---")]
    served = (f"[{hub_id}](https://huggingface.co/{hub_id}), read through the Space variable {VARIABLE}"
              if hub_id else f"`{SERVED}` in this Space")
    (out / "README.md").write_text(space_readme(front_matter, served), encoding="utf-8")
    files = sorted((p.relative_to(out).as_posix(), p.stat().st_size) for p in out.rglob("*") if p.is_file())
    total = sum(size for _, size in files)
    if total > MAX_BYTES:
        raise SpaceError(f"the Space folder holds {total / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB "
                         f"allowed; serve a large model from the Hub instead (--checkpoint USER/MODEL)")
    return files, hub_id


def describe(error: Exception) -> str:
    """An exception as one short line: its type and the first line of its message."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"


def require_token() -> str:
    token = huggingface_hub.get_token()
    if not token:
        raise SpaceError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then try again")
    return token


def deploy(folder: Path, space: str, *, token: str, private: bool, hub_id: str | None) -> str:
    """Create the Space `space` (or update it) with exactly the files of `folder`, in one commit,
    and set (Hub model) or remove (bundled model) its variable CCVAE_CHECKPOINT. Returns its URL."""
    api = huggingface_hub.HfApi(token=token)
    url = f"{api.endpoint}/spaces/{space}"
    sdk = metadata_load(folder / "README.md")["sdk"]

    def hub(doing: str, call, *args, **kwargs):
        """call(*args, **kwargs), its failure said in one line; `doing` says what it does to whom."""
        try:
            return call(*args, **kwargs)
        except HfHubHTTPError as e:
            status = e.response.status_code
            if call == api.create_repo and status == 409:
                raise SpaceError(f"the name {space} is taken on the Hub (by a model repository, or a Space you "
                                 f"cannot see); choose another with --space") from e
            if status == 401:
                raise SpaceError(f"the Hub refused your token to {doing} ({describe(e)}); "
                                 f"run `hf auth login` with a token that can write") from e
            raise SpaceError(f"the Hub refused to {doing} ({describe(e)})") from e
        except Exception as e:  # no network, DNS, TLS, timeouts: nothing of the request reached the Hub
            raise SpaceError(f"could not reach the Hugging Face Hub to {doing} ({describe(e)}); "
                             f"check the connection and try again") from e

    if hub_id and not hub(f"look up the model {hub_id}", api.repo_exists, hub_id):
        raise SpaceError(f"--checkpoint {hub_id} is not a model on the Hub (or is private): the Space could not "
                         f"load it")
    exists = hub(f"look up the Space {space}", api.repo_exists, space, repo_type="space")
    if not exists:
        if hub(f"look up the model {space}", api.repo_exists, space, repo_type="model"):
            raise SpaceError(f"{space} is already a model repository on the Hub; choose another name with --space")
        hub(f"create the Space {space}", api.create_repo, space, repo_type="space", space_sdk=sdk, private=private)
    # The variable is set before the upload (the new app starts on it) and removed after it (the
    # old app, which may hold no weights, keeps serving the Hub model until the new one lands).
    if hub_id:
        hub(f"set {VARIABLE} on {space}", api.add_space_variable, space, VARIABLE, hub_id,
            description="the model the demo serves (python -m train.publish --space)")
    try:
        info = api.upload_folder(repo_id=space, repo_type="space", folder_path=folder, delete_patterns="*",
                                 commit_message=f"Deploy the CCVAE demo serving {hub_id or SERVED}")
    except Exception as e:
        raise SpaceError(f"the upload to {url} was refused or failed ({describe(e)}); it is one commit, "
                         f"so the Space's files are unchanged: run the command again") from e
    if not hub_id and exists and VARIABLE in hub(f"read the variables of {space}", api.get_space_variables, space):
        hub(f"remove {VARIABLE} from {space}", api.delete_space_variable, space, VARIABLE)
    return str(getattr(info, "commit_url", url))
