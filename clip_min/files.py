"""Where clip_min keeps its files, and writing them so that a crash never leaves half of one."""

from __future__ import annotations

import errno
import hashlib
import json
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


def content_fingerprint(path: str | Path) -> str:
    """SHA-256 of a file's bytes (of a folder's files, with their names), e.g. "sha256:9f2c...".

    Weights are identified by content: a copy with another model's size and modification time
    must not inherit its cached features or pass as a run's base. Hashing ViT-B/32 takes about a
    second, so each result is remembered in cache_root()/hashes.json under the file's path, size,
    mtime, inode and ctime, and recomputed when one of them changes. ctime is the one a user
    cannot set back: copying bytes over a file, or setting its mtime, moves it to now.
    """
    path = Path(path)
    if path.is_dir():  # a Hugging Face checkpoint folder
        parts = [f"{p.name}={content_fingerprint(p)}" for p in sorted(path.iterdir()) if p.is_file()]
        return "sha256:" + hashlib.sha256("|".join(parts).encode()).hexdigest()
    memo_file = cache_root() / "hashes.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError, RecursionError):  # none yet, or damaged: it is only a memo
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    stat = path.stat()
    key = f"{file_fingerprint(path)}:{stat.st_ino}:{stat.st_ctime_ns}"
    if key not in memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        memo[key] = "sha256:" + digest.hexdigest()
        atomic_write_text(memo_file, json.dumps(memo, indent=0) + "\n")
    return memo[key]


def describe_os_error(err: OSError) -> str:
    """One line for an operating-system error: the file, what went wrong, and what to do."""
    if err.errno is None:  # raised by our own checks, with its message written for the user
        return " ".join(str(err).split())
    where = " -> ".join(str(name) for name in (err.filename, err.filename2) if name is not None) or "a file"
    hint = {
        errno.ENOSPC: "free some disk space and try again",
        errno.EDQUOT: "free some disk space and try again",
        errno.EACCES: "choose a place you may write to, or fix its permissions",
        errno.EPERM: "choose a place you may write to, or fix its permissions",
        errno.EROFS: "the file system is read-only; choose another place",
        errno.EEXIST: "a file is in the way of a folder; move it or choose another path",
        errno.ENOTDIR: "a file is in the way of a folder; move it or choose another path",
        errno.EISDIR: "a folder is where a file was expected; check the path",
        errno.ENOENT: "check the path",
    }.get(err.errno, "check the path and the disk")
    try:
        in_cache = err.filename is not None and Path(err.filename).resolve().is_relative_to(cache_root().resolve())
    except (OSError, ValueError):
        in_cache = False
    if in_cache:
        hint += f"; clip_min's cache is {cache_root()} (set CLIP_MIN_CACHE to a writable folder to move it)"
    return f"{where}: {err.strerror or type(err).__name__}; {hint}"


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
