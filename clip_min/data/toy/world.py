"""Writing the toy world's files: Concadia's layout, the transfer tasks, the two norms, the manifest."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from ...files import UnreadableFile, cache_root, read_json
from .articles import plan_toy_world, plan_transfer_tasks
from .drawing import render_scene
from .imageability import toy_word_ratings, write_brysbaert_concreteness, write_glasgow_norms
from .records import ToyConfig, TransferImage

FORMAT_VERSION = 7  # bump when the files written for the same config change
CONCADIA_SUBDIR = "concadia"
TRANSFER_SUBDIR = "transfer"
NORMS_FILE = "norms/glasgow_norms.csv"  # imageability (and Glasgow's own concreteness, CNC)
CONCRETENESS_FILE = "norms/brysbaert_concreteness.txt"  # concreteness, as Table 3's second norm
MANIFEST_FILE = "toy_world.json"


def word_tokens(text: str) -> list[str]:
    """Lowercase words and punctuation marks, as the "tokens" of a Concadia text entry."""
    return re.findall(r"'\w+|\w+|[^\w\s]", text.lower())


def toy_world_dir() -> Path:
    """Default home of the toy world: $CLIP_MIN_CACHE/toy, else ~/.cache/clip_min/toy."""
    return cache_root() / "toy"


def make_toy_world(root: str | Path, seed: int = 0, n_articles: int = 600, **options) -> Path:
    """Write the toy world under root (unless it is already there) and return root.

    options are the other fields of ToyConfig. The world is built in a temporary folder beside
    root and renamed into place, so an interrupted run leaves no half world behind.
    """
    config = ToyConfig(seed=seed, n_articles=n_articles, **options)
    root = Path(root)
    manifest = {"format_version": FORMAT_VERSION, "config": asdict(config)}
    if _read_manifest(root) == manifest:
        return root
    if root.exists() and not (root / MANIFEST_FILE).is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root} holds files but no toy world; pass an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        _write_concadia(tmp / CONCADIA_SUBDIR, config)
        _write_transfer(tmp / TRANSFER_SUBDIR, config)
        write_glasgow_norms(tmp / NORMS_FILE, toy_word_ratings())
        write_brysbaert_concreteness(tmp / CONCRETENESS_FILE, toy_word_ratings())
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")  # last: marks it complete
        tmp.chmod(0o755)
        _move_into_place(tmp, root, manifest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def _read_manifest(root: Path) -> dict | None:
    try:
        return read_json(root / MANIFEST_FILE, 1 << 20, "toy world manifest", "the world is made again")  # ~1 kB
    except UnreadableFile:
        return None


def _move_into_place(tmp: Path, root: Path, manifest: dict) -> None:
    old = root.with_name(f".{root.name}.old-{os.getpid()}")
    if root.exists():
        root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        # Another process put a world there first; if it is the same world, use it.
        if not root.exists() and old.exists():
            old.rename(root)
        if _read_manifest(root) != manifest:
            raise
    if old.exists():
        shutil.rmtree(old)


def _save_jpeg(image: Image.Image, path: Path, quality: int) -> None:
    # Full-resolution colour (no 4:2:0 chroma subsampling): a small shape keeps its colour.
    image.save(path, format="JPEG", quality=quality, subsampling=0)


def _write_concadia(folder: Path, config: ToyConfig) -> None:
    (folder / "resized").mkdir(parents=True)
    records = []
    for image in plan_toy_world(config):
        pixels = render_scene(image.scene, config.image_size)
        _save_jpeg(pixels, folder / "resized" / image.filename, config.jpeg_quality)
        records.append(
            {
                "article_id": image.article_id,
                "filename": image.filename,
                "orig_filename": image.orig_filename,
                "description": {"raw": image.description, "tokens": word_tokens(image.description)},
                "caption": {"raw": image.caption, "tokens": word_tokens(image.caption)},
                "context": {"raw": image.context, "tokens": word_tokens(image.context)},
                "split": image.split,
            }
        )
    with open(folder / "wiki_split.json", "w", encoding="utf-8") as f:
        json.dump({"images": records}, f, indent=4)  # the release is indented the same way


def _write_transfer(folder: Path, config: ToyConfig) -> None:
    by_task: dict[str, list[TransferImage]] = {}
    for image in plan_transfer_tasks(config):
        by_task.setdefault(image.task, []).append(image)
    for task, images in by_task.items():
        meta = folder / task / "meta"
        meta.mkdir(parents=True)
        classes = sorted({image.label for image in images})
        (meta / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
        (meta / "labels.txt").write_text("".join(f"{c.capitalize()}\n" for c in classes))
        (meta / "test.txt").write_text("".join(f"{image.label}/{image.image_id}\n" for image in images))
        for label in classes:
            (folder / task / "images" / label).mkdir(parents=True)
        for image in images:
            path = folder / task / "images" / image.label / f"{image.image_id}.jpg"
            _save_jpeg(render_scene(image.scene, config.image_size), path, config.jpeg_quality)
