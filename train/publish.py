"""Publish a trained model to the Hugging Face Hub: `python -m train.publish RUN_DIR --repo-id USER/NAME`,
or deploy the demo as a Space: `python -m train.publish --space USER/NAME [--checkpoint DIR_OR_HUB_ID]`.

Uploads the model folder (config.json, model.safetensors, README.md model card, traversal.png,
the run's settings train_config.json and its metrics.json when present)
and the last epoch's sample figures (under samples/) in ONE commit, so the repository never holds
half an upload. `--dry-run OUT_DIR` writes exactly the folder that would be uploaded and stops.
The folder is loaded with CCVAE.from_pretrained before anything is sent.

`--space` uploads the folder of train.space instead (the app, ccvae/, requirements.txt, the README's
front matter and the served model) through the Hub's HTTP API, which stores binaries through Xet/LFS
(a `git push` of them is refused); `--dry-run OUT_DIR` writes that folder, which `python app.py` serves.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from ccvae import CCVAE, CheckpointError
from train import space
from train.space import REPO_ID

MODEL_FILES = ("config.json", "model.safetensors", "README.md", "traversal.png", "train_config.json", "metrics.json")


class PublishError(Exception):
    """What went wrong, said for the user; exit status 1."""


def model_folder(run_dir: Path) -> Path:
    """The model folder of a run (RUN_DIR/model) or RUN_DIR itself when it is a model folder."""
    for candidate in (run_dir / "model", run_dir):
        if (candidate / "config.json").is_file():
            return candidate
    raise PublishError(f"{run_dir} holds no model: expected {run_dir}/model/config.json (a run folder) "
                       f"or {run_dir}/config.json (a model folder)")


def stage(run_dir: Path, out: Path) -> list[str]:
    """Write the folder to upload into `out`; returns the relative paths written."""
    src = model_folder(run_dir)
    try:
        CCVAE.from_pretrained(src)
    except CheckpointError as e:
        raise PublishError(f"refusing to publish a model that does not load: {e}") from e
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
            written.append(name)
    figures = sorted((run_dir / "figures").glob("epoch*_*.png")) if (run_dir / "figures").is_dir() else []
    if figures:
        last = figures[-1].name.split("_")[0]
        (out / "samples").mkdir(exist_ok=True)
        for f in figures:
            if f.name.startswith(last + "_"):
                shutil.copy2(f, out / "samples" / f.name.split("_", 1)[1])
                written.append(f"samples/{f.name.split('_', 1)[1]}")
    return written


def upload(folder: Path, repo_id: str, *, private: bool) -> str:
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise PublishError("no Hugging Face token: run `hf auth login` or set HF_TOKEN, then try again")
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
    except Exception as e:  # network, refused, invalid name: nothing was created or changed
        raise PublishError(f"could not create or open {repo_id} on the Hub ({type(e).__name__}: {e}); "
                           f"nothing was uploaded") from e
    try:
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Upload CCVAE model")
    except Exception as e:
        raise PublishError(f"the upload to {url} failed ({type(e).__name__}: {e}). The upload is a single commit, "
                           f"so nothing of it landed; the repository itself exists now (delete it on the Hub "
                           f"if you do not retry)") from e
    return str(getattr(info, "commit_url", url))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.publish", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, nargs="?", help="a run folder (from python -m train) or a model folder")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", help="publish the model RUN_DIR as the model repository USER/NAME")
    target.add_argument("--space", help="deploy the demo as the Space USER/NAME (created if need be, else updated)")
    p.add_argument("--checkpoint", help=f"with --space: the model the demo serves, a local folder (copied into the "
                                        f"Space) or a Hub id (set as the Space variable {space.VARIABLE}); "
                                        f"default {space.BUNDLED_CHECKPOINT.relative_to(space.REPO)}")
    p.add_argument("--private", action="store_true", help="create the repository or Space as private")
    p.add_argument("--dry-run", type=Path, metavar="OUT_DIR", help="write the folder that would be uploaded here, upload nothing")
    return p.parse_args(argv)


def print_listing(files: list[tuple[str, int]], hub_id: str | None) -> None:
    for name, size in files:
        print(f"  {size:>10,}  {name}")
    total = sum(size for _, size in files)
    print(f"  {total:>10,}  bytes in {len(files)} files ({total / 2**20:.1f} MB)")
    print(f"Space variable {space.VARIABLE}: " + (hub_id or f"not set (the app serves {space.SERVED})"))


def main_space(args: argparse.Namespace) -> int:
    """--space: stage the Space folder, then list it (--dry-run) or deploy it."""
    if not REPO_ID.match(args.space):
        raise PublishError(f"--space {args.space!r} is not of the form USER/NAME")
    checkpoint = args.checkpoint or str(space.BUNDLED_CHECKPOINT)
    if args.dry_run:
        files, hub_id = space.stage(checkpoint, args.dry_run)
        print(f"dry run: wrote the Space folder for {args.space} to {args.dry_run} (nothing uploaded):")
        print_listing(files, hub_id)
        return 0
    token = space.require_token()
    with tempfile.TemporaryDirectory(prefix="ccvae-space-") as tmp:
        folder = Path(tmp) / "space"
        files, hub_id = space.stage(checkpoint, folder)
        print(f"deploying to the Space {args.space}:")
        print_listing(files, hub_id)
        url = space.deploy(folder, args.space, token=token, private=args.private, hub_id=hub_id)
    print(f"deployed: {url}")
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        if args.space:
            if args.run_dir is not None:
                raise PublishError(f"--space deploys the demo: give its model with --checkpoint {args.run_dir}, "
                                   f"not as RUN_DIR")
            return main_space(args)
        if args.run_dir is None or args.checkpoint:
            raise PublishError("--repo-id publishes the model RUN_DIR: give RUN_DIR, and no --checkpoint")
        if not REPO_ID.match(args.repo_id):
            raise PublishError(f"--repo-id {args.repo_id!r} is not of the form USER/NAME")
        if args.dry_run:
            written = stage(args.run_dir, args.dry_run)
            print(f"dry run: wrote {len(written)} files to {args.dry_run} (would upload to {args.repo_id}):")
            for w in written:
                print(f"  {w}")
            return 0
        with tempfile.TemporaryDirectory(prefix="ccvae-publish-") as tmp:
            written = stage(args.run_dir, Path(tmp))
            url = upload(Path(tmp), args.repo_id, private=args.private)
        print(f"published {len(written)} files to {args.repo_id}: {url}")
        return 0
    except (PublishError, space.SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
