"""Publish a trained model to the Hugging Face Hub: `python -m train.publish RUN_DIR --repo-id USER/NAME`,
or deploy the demo as a Space: `python -m train.publish --space USER/NAME [--checkpoint DIR_OR_HUB_ID]`.

Uploads the model folder (config.json, model.safetensors, README.md model card, traversal.png,
the run's settings train_config.json and its metrics.json when present)
and the last epoch's sample figures (under samples/) in ONE commit, so the repository never holds
half an upload. Private by default: figures drawn from the user's own images (any dataset but the
synthetic faces that ship with ccvae) stay on the machine unless --include-samples, and local paths
in the card and settings become placeholders (IMAGES_DIR, LABELS.csv). `--dry-run OUT_DIR` writes
exactly the folder that would be uploaded, lists every file with those that hold the user's
images flagged, and stops.
The folder is loaded with CCVAE.from_pretrained before anything is sent.

`--space` uploads the folder of train.space instead (the app, ccvae/, requirements.txt, the README's
front matter and the served model) through the Hub's HTTP API, which stores binaries through Xet/LFS
(a `git push` of them is refused); `--dry-run OUT_DIR` writes that folder, which `python app.py` serves.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from ccvae import CCVAE, CheckpointError, hub
from train import space
from train.config import CONFIG_NAME
from train.modelcard import PLACEHOLDERS
from train.space import REPO_ID

MODEL_FILES = ("config.json", "model.safetensors", "README.md", "traversal.png", CONFIG_NAME, "metrics.json")


class PublishError(Exception):
    """What went wrong, said for the user; exit status 1."""


def model_folder(run_dir: Path) -> Path:
    """The model folder of a run (RUN_DIR/model) or RUN_DIR itself when it is a model folder."""
    try:
        return hub.model_dir(run_dir)
    except CheckpointError as e:
        raise PublishError(str(e)) from None


SHIPPED_DATASETS = ("synthetic",)  # datasets that ship with the project: their figures may be uploaded
PRIVATE = "your images"  # the flag of a file made from the user's own (training or held-out) images


def _dataset(src: Path) -> str | None:
    """The dataset the model in `src` was trained on (its train_config.json), None if unknown."""
    try:
        return json.loads((src / CONFIG_NAME).read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None


def _scrub(text: str, paths: dict[str, str]) -> str:
    """text with each local path (and its absolute form) replaced by its placeholder."""
    for path, placeholder in paths.items():
        for form in {path, str(Path(path).expanduser().resolve())}:
            text = text.replace(form, placeholder)
    return text


def stage(run_dir: Path, out: Path, *, include_samples: bool = False) -> list[tuple[str, str | None, bool]]:
    """Write the folder to upload into `out`. Returns one (relative path, flag, written) per file:
    flag PRIVATE when the file is made from the user's images (a dataset other than those in
    SHIPPED_DATASETS, or an unknown one), written False when it was left out for that reason
    (include_samples puts it in). Local paths in the card and settings become placeholders."""
    src = model_folder(run_dir)
    try:
        CCVAE.from_pretrained(src)
    except CheckpointError as e:
        raise PublishError(f"refusing to publish a model that does not load: {e}") from e
    private = _dataset(src) not in SHIPPED_DATASETS
    settings = json.loads((src / CONFIG_NAME).read_text()) if (src / CONFIG_NAME).is_file() else {}
    paths = {settings[k]: PLACEHOLDERS[k].get(settings.get("dataset"), k.upper()) for k in PLACEHOLDERS
             if isinstance(settings.get(k), str)}
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for name in MODEL_FILES:
        if not (src / name).is_file():
            continue
        if name == "traversal.png" and private:  # drawn from the run's own held-out faces
            if include_samples:
                shutil.copy2(src / name, out / name)
            listing.append((name, PRIVATE, include_samples))
        elif name == CONFIG_NAME:
            values = {**settings, **{k: paths.get(settings[k]) for k in PLACEHOLDERS if settings.get(k) is not None}}
            (out / name).write_text(json.dumps(values, indent=2) + "\n")
            listing.append((name, None, True))
        elif name.endswith((".md", ".json")):
            text = _scrub((src / name).read_text(), paths)
            if name == "README.md" and private and not include_samples:
                text = text.replace("![traversal](traversal.png)", "(The traversal figure is drawn from the training "
                                    "run's own images and was not uploaded.)")
            (out / name).write_text(text)
            listing.append((name, None, True))
        else:
            shutil.copy2(src / name, out / name)
            listing.append((name, None, True))
    figures = sorted((run_dir / "figures").glob("epoch*_*.png")) if (run_dir / "figures").is_dir() else []
    if figures:
        last = figures[-1].name.split("_")[0]
        for f in figures:
            if f.name.startswith(last + "_"):
                name = f"samples/{f.name.split('_', 1)[1]}"
                if not private or include_samples:
                    (out / "samples").mkdir(exist_ok=True)
                    shutil.copy2(f, out / name)
                listing.append((name, PRIVATE if private else None, not private or include_samples))
    return listing


def print_files(listing: list[tuple[str, str | None, bool]]) -> None:
    """One line per file: what is uploaded, what holds the user's images, what was left out."""
    for name, flag, written in listing:
        note = "" if flag is None else (f"  [{flag}: uploaded, as --include-samples asks]" if written else
                                        f"  [{flag}: left out; --include-samples uploads it]")
        print(f"  {'' if written else '(not uploaded) '}{name}{note}")


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
    p.add_argument("run_dir", type=Path, nargs="?", help="a run folder (from python -m train) or its model/ folder")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--repo-id", help="publish the model RUN_DIR as the model repository USER/NAME")
    target.add_argument("--space", help="deploy the demo as the Space USER/NAME (created if need be, else updated)")
    p.add_argument("--checkpoint", help=f"with --space: the model the demo serves, a local folder (copied into the "
                                        f"Space) or a Hub id (set as the Space variable {space.VARIABLE}); "
                                        f"default {space.BUNDLED_CHECKPOINT.relative_to(space.REPO)}")
    p.add_argument("--private", action="store_true", help="create the repository or Space as private")
    p.add_argument("--include-samples", action="store_true",
                   help="also upload the figures drawn from your own images (traversal.png, samples/); by default "
                        "only figures of a dataset that ships with ccvae (the synthetic faces) are uploaded")
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
            listing = stage(args.run_dir, args.dry_run, include_samples=args.include_samples)
            print(f"dry run: wrote {sum(w for _, _, w in listing)} files to {args.dry_run} (would upload to "
                  f"{args.repo_id}); local paths replaced by placeholders:")
            print_files(listing)
            return 0
        with tempfile.TemporaryDirectory(prefix="ccvae-publish-") as tmp:
            listing = stage(args.run_dir, Path(tmp), include_samples=args.include_samples)
            print_files(listing)
            url = upload(Path(tmp), args.repo_id, private=args.private)
        print(f"published {sum(w for _, _, w in listing)} files to {args.repo_id}: {url}")
        return 0
    except (PublishError, space.SpaceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
