"""Where clip_min keeps its files, and writing them so that a crash never leaves half of one."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

import torch


def cache_root() -> Path:
    """Where clip_min keeps generated and cached files: $CLIP_MIN_CACHE or ~/.cache/clip_min."""
    cache = os.environ.get("CLIP_MIN_CACHE")
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "clip_min"


def file_fingerprint(path: str | Path) -> str:
    """Cheap identity of a file (absolute path, size, mtime, inode, ctime), or of a folder's files.

    The modification time alone can be set back (``cp -p``, ``touch -d``, ``os.utime``); the
    inode and the change time cannot: writing bytes over a file, or setting its mtime, moves its
    ctime to now, and a copy put in its place has another inode.
    """
    path = Path(path)
    if path.is_dir():  # a Hugging Face checkpoint folder
        return "|".join(file_fingerprint(p) for p in sorted(path.iterdir()) if p.is_file())
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}"


def inside(folder: str | Path, name: object) -> Path | None:
    """``folder / name`` if its real path (symlinks followed) lies inside ``folder``'s, else None.

    Every reader that joins a name taken from a file (a Concadia filename, a Food-101 list
    entry, an img_file column, an image found in a class folder) goes through here. Checking the
    string alone ("..", a leading "/") lets a symlink out, so the check is on the resolved path.
    A name that is not a string, holds a NUL, or is one the file system refuses is None too.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        return None
    try:
        root = os.path.realpath(folder)
        target = os.path.realpath(os.path.join(root, name))
        os.stat(target)  # ENAMETOOLONG and the like surface here; a missing file is the caller's to count
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    if target == root or os.path.commonpath([root, target]) != root:
        return None
    return Path(folder) / name


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, comparing real paths (symlinks followed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def check_output(out: str | Path, flag: str, inputs: list[tuple[str, str | Path | None]], holds: bool = True) -> None:
    """Refuse an output path that is, lies inside, or (``holds``: a folder written whole) holds one of the command's inputs.

    ``inputs`` pairs a name ("--weights", "the run's base") with a path or None. Writing a run
    folder into the data folder, or exporting over the base weights, would destroy what the
    command reads; the check compares real paths, so a symlink or "a/../b" does not get past it.
    """
    for name, path in inputs:
        if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
            continue
        if is_within(out, path) or (holds and is_within(path, out)):
            relation = "is" if os.path.realpath(out) == os.path.realpath(path) else (
                "lies inside" if is_within(out, path) else "holds")
            raise ValueError(f"{flag} {out} {relation} {name} {path}; writing there would overwrite what the "
                             f"command reads: choose a {flag} outside its inputs")


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
        return folder_fingerprint(path, {})
    memo_file = cache_root() / "hashes.json"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError, RecursionError):  # none yet, or damaged: it is only a memo
        memo = {}
    if not isinstance(memo, dict):
        memo = {}
    key = file_fingerprint(path)
    if key not in memo:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        remember_hash(key, "sha256:" + digest.hexdigest(), memo)
        return "sha256:" + digest.hexdigest()
    return memo[key]


def remember_hash(key: str, digest: str, memo: dict | None = None) -> None:
    """Note in cache_root()/hashes.json that the file whose :func:`file_fingerprint` was ``key`` has this digest."""
    memo_file = cache_root() / "hashes.json"
    if memo is None:
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError, RecursionError):
            memo = {}
        if not isinstance(memo, dict):
            memo = {}
    memo[key] = digest
    atomic_write_text(memo_file, json.dumps(memo, indent=0) + "\n")


def read_identified(path: str | Path) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256 ("sha256:..."), read once: what is parsed is what is identified.

    Hashing the file apart from reading it would leave a moment in which it could change between
    the two; here the digest is of the very bytes returned. It is remembered for
    :func:`content_fingerprint` when the file did not change while it was read.
    """
    before = file_fingerprint(path)
    data = Path(path).read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if file_fingerprint(path) == before:
        try:
            remember_hash(before, digest)
        except OSError:  # the memo only saves time; an unwritable cache is reported where it is needed
            pass
    return data, digest


def folder_fingerprint(folder: str | Path, read: dict[str, str]) -> str:
    """:func:`content_fingerprint` of a folder, taking the digests of the files in ``read`` (name -> digest) as given."""
    parts = [f"{p.name}={read[p.name] if p.name in read else content_fingerprint(p)}"
             for p in sorted(Path(folder).iterdir()) if p.is_file()]
    return "sha256:" + hashlib.sha256("|".join(parts).encode()).hexdigest()


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
        errno.ELOOP: "a symbolic link on the path leads back to itself; remove it or choose another path",
        errno.EFBIG: "the file is larger than this file system (or `ulimit -f`) allows; choose another place",
    }.get(err.errno, "check the path and the disk")
    try:
        in_cache = isinstance(err.filename, (str, os.PathLike)) and is_within(err.filename, cache_root())
    except (OSError, ValueError):
        in_cache = False
    if in_cache:
        hint += f"; clip_min's cache is {cache_root()} (set CLIP_MIN_CACHE to a writable folder to move it)"
    return f"{where}: {err.strerror or type(err).__name__}; {hint}"


def not_a_plain_file(path: str | Path, info: os.stat_result) -> str | None:
    """Why ``path`` (its ``lstat``) is not a file clip_min may write into, or None: a link is never written through."""
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISREG(info.st_mode):
        return "is not a plain file"
    if info.st_nlink != 1:
        return f"is a hard link ({info.st_nlink} names for one file)"
    return None


def refused_link(path: str | Path, why: str) -> OSError:
    """The one-line error for a name clip_min would write through: it writes only files of its own."""
    return OSError(f"{path} {why}; clip_min never writes through a link (that would change the file it leads to): "
                   "remove it and run again")


def open_own(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that never follows a link at ``path``, and refuses anything there but a plain file with one name."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError:
        if os.path.islink(path):
            raise refused_link(path, "is a symbolic link") from None
        raise
    why = not_a_plain_file(path, os.fstat(fd))
    if why:
        os.close(fd)
        raise refused_link(path, why)
    return fd


def create_exclusively(path: Path) -> int:
    """A new file at ``path`` open for writing: created here, never an existing file, never through a link.

    Only atomic_write's temporary names, which hold this process's pid, come here. A plain file
    already under one was left by an earlier process with the same pid (in a container every run
    can be pid 1) killed mid-write, and is replaced; anything else there is refused.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return open_own(path, flags)
    except FileExistsError:
        why = not_a_plain_file(path, os.lstat(path))
        if why:
            raise refused_link(path, why) from None
        os.unlink(path)
        return open_own(path, flags)


def os_error_behind(err: BaseException) -> OSError | None:
    """The operating-system error ``err`` is, or was raised while handling (torch.save turns a failed write into a RuntimeError)."""
    while err is not None and not isinstance(err, OSError):
        err = err.__context__
    return err


def failed(err: Exception, step: str, path: str | Path) -> OSError | None:
    """The OS error behind ``err``, naming ``path`` and the step that failed ("writing it"); None if there is none."""
    cause = os_error_behind(err)
    if cause is None or cause.errno is None:  # not the system's, or our own check with its own message
        return None
    return OSError(cause.errno, f"{step} failed ({cause.strerror})", str(path))


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    The data is on disk before the rename, so a crash or a power cut at any moment leaves either
    the old file or the new one, never a half-written one. The temporary file is created
    exclusively, so the bytes go into a file of this process's own and never through a link; the
    rename replaces a link at ``path`` itself, never the file it leads to. An OS error names
    ``path`` and the step that failed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    step = "making its folder"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        step = f"creating {tmp.name} to write it"
        fd = create_exclusively(tmp)
        try:
            step = "writing it"
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            step = f"renaming {tmp.name} into place"
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except Exception as err:
        named = failed(err, step, path)
        if named is None:
            raise
        raise named from err


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to a file, creating it if needed, never through a link."""
    try:
        with os.fdopen(open_own(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as f:
            f.write(text.encode("utf-8"))
    except OSError as err:
        named = failed(err, "appending to it", path)
        if named is None:
            raise
        raise named from err


def atomic_save(obj, path: str | Path) -> None:
    """torch.save, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file, atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
