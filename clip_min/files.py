"""Where clip_min keeps its files, and writing them so that a crash never leaves half of one."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def cache_root() -> Path:
    """Where clip_min keeps generated and cached files: $CLIP_MIN_CACHE or ~/.cache/clip_min."""
    cache = os.environ.get("CLIP_MIN_CACHE")
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "clip_min"


def file_fingerprint(path: str | Path) -> str:
    """Cheap identity of a file (absolute path, size, modification time), or of a folder's files."""
    path = Path(path)
    if path.is_dir():  # a Hugging Face checkpoint folder
        return "|".join(file_fingerprint(p) for p in sorted(path.iterdir()) if p.is_file())
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The data is on disk before the rename, so a crash or a power cut at any moment leaves either
    the old file or the new one, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj, path: str | Path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
