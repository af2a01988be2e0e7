"""Where clip_min keeps its files, writing them so that a crash never leaves half of one, and
reading a file whole only once it is known to be a regular file of a size its format can have."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import BinaryIO

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
    A name that is not a string, holds a NUL, or is one the file system refuses is None too. A
    link that loops leads nowhere, so it is returned like a missing file, for the caller to count
    as one (the image opener, :func:`open_whole`, cannot open it either).
    """
    if not isinstance(name, str) or not name or "\0" in name:
        return None
    try:
        root = os.path.realpath(folder)
        target = os.path.realpath(os.path.join(root, name))
        os.stat(target)  # ENAMETOOLONG and the like surface here
    except OSError as err:
        if err.errno not in (errno.ENOENT, errno.ELOOP):  # missing, or a link that loops: the caller counts it
            return None
    except ValueError:
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
    memo = _read_memo()
    key = file_fingerprint(path)
    if key not in memo:
        digest = hashlib.sha256()
        with open_whole(path, None) as f:  # hashed a block at a time, so no ceiling; but never a FIFO or a device
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        remember_hash(key, "sha256:" + digest.hexdigest(), memo)
        return "sha256:" + digest.hexdigest()
    return memo[key]


def remember_hash(key: str, digest: str, memo: dict | None = None) -> None:
    """Note in cache_root()/hashes.json that the file whose :func:`file_fingerprint` was ``key`` has this digest."""
    memo = _read_memo() if memo is None else memo
    memo[key] = digest
    atomic_write_text(cache_root() / "hashes.json", json.dumps(memo, indent=0) + "\n")


# hashes.json holds a line of about 250 bytes per file ever hashed: 64 MiB is a quarter of a million.
MAX_MEMO_BYTES = 64 << 20


def _read_memo() -> dict:
    """cache_root()/hashes.json, or {} if there is none yet or it is damaged: it is only a memo."""
    try:
        memo = read_json(cache_root() / "hashes.json", MAX_MEMO_BYTES, "hash memo", "it is rebuilt")
    except UnreadableFile:
        return {}
    return memo if isinstance(memo, dict) else {}


def read_identified(path: str | Path, limit: int, what: str) -> tuple[bytes, str]:
    """A file's bytes and their SHA-256 ("sha256:..."), read once: what is parsed is what is identified.

    Hashing the file apart from reading it would leave a moment in which it could change between
    the two; here the digest is of the very bytes returned. It is remembered for
    :func:`content_fingerprint` when the file did not change while it was read. The file is read
    by :func:`read_whole`, with its format's ``limit`` and name ``what``.
    """
    try:
        before = file_fingerprint(path)
    except OSError:  # read_whole says what is wrong with the path, in one line
        before = None
    data = read_whole(path, limit, what)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if before is not None and file_fingerprint(path) == before:
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
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a path meeting a link that loops
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


# ---- reading a file whole ------------------------------------------------------------------------

# What a path can be besides a regular file, as the one-line refusal names it.
NOT_REGULAR = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device",
               stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}
# How to go on after the operating system refused to open a file for reading.
READ_HINTS = {errno.ENOENT: "check the path", errno.EACCES: "fix its permissions", errno.EPERM: "fix its permissions",
              errno.ELOOP: "it is a symbolic link that leads back to itself; fix or remove the link",
              errno.ENAMETOOLONG: "the name is longer than the file system allows; check the path",
              errno.ENOTDIR: "a part of the path is a file, not a folder; check the path"}


class UnreadableFile(ValueError):
    """A file that cannot be read whole; the message, one line, names the file and what is wrong."""


def open_whole(path: str | Path, limit: int | None, what: str = "file") -> BinaryIO:
    """``path`` opened for reading, once it is known to be a regular file of at most ``limit`` bytes.

    Every reader that reads a file whole goes through here. A FIFO would block the read forever,
    /dev/zero never ends, and a 40 GB file in place of a config fills the memory before a parser
    could object. The checks are on the opened file (fstat), after links are followed, so a name
    swapped for something else between a check and the open cannot get past them; O_NONBLOCK
    keeps the open itself from waiting for a FIFO's writer. ``what`` names the format in errors
    ("weights file", "run config"); ``limit`` is the largest that format can plausibly be (None: no
    ceiling, for a file hashed a block at a time, whose size costs time but not memory).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        hint = READ_HINTS.get(err.errno, "check the path and the disk")
        raise UnreadableFile(f"cannot open the {what} {path} to read it: {err.strerror}; {hint}") from None
    try:
        info = os.fstat(fd)
        kind = stat.S_IFMT(info.st_mode)
        if kind != stat.S_IFREG:
            raise UnreadableFile(f"the {what} {path} is {NOT_REGULAR.get(kind, 'not a regular file')}, not a regular "
                                 "file; check the path, or put the file itself there")
        if limit is not None and info.st_size > limit:
            raise UnreadableFile(f"the {what} {path} is {info.st_size:,} bytes, more than a {what} can plausibly be "
                                 f"({limit:,} at most); check that the path names the right file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_whole(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (:func:`open_whole`), or one line naming what is wrong."""
    with open_whole(path, limit, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise UnreadableFile(f"cannot read the {what} {path}: {err.strerror}; check the disk") from None
    if len(data) > limit:  # it grew while it was read
        raise UnreadableFile(f"the {what} {path} grew past {limit:,} bytes while it was read; read it again once "
                             "whatever writes it has finished")
    return data


def read_text_whole(path: str | Path, limit: int, what: str = "file") -> str:
    """A UTF-8 text file read whole (:func:`read_whole`); a leading byte-order mark is dropped."""
    data = read_whole(path, limit, what)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UnreadableFile(f"the {what} {path} is not UTF-8 text (byte {err.start:,} is {data[err.start]:#04x}); "
                             f"save it as UTF-8, or check that the path names the right file") from None


def read_json(path: str | Path, limit: int, what: str, fix: str) -> object:
    """A JSON file read whole (:func:`read_text_whole`) and parsed; ``fix`` says what to do if it is not JSON."""
    text = read_text_whole(path, limit, what)
    try:
        return json.loads(text)
    except RecursionError:  # json recurses once per level: a line of 100,000 "[" exhausts the stack
        raise UnreadableFile(f"the {what} {path} is JSON nested too deeply to be a {what}; {fix}") from None
    except json.JSONDecodeError as err:
        raise UnreadableFile(f"the {what} {path} is not valid JSON ({err.msg} at line {err.lineno}); {fix}") from None


def doubled_name(names: list[str]) -> str | None:
    """The first name a zip archive's directory lists twice, or None.

    Which of two entries of one name a reader takes is up to the reader (Python's zipfile takes
    the last, others the first), so what one check reads need not be what another loads.
    """
    seen = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def load_tensors(path: str | Path, limit: int, what: str, map_location: str | torch.device = "cpu") -> object:
    """``torch.load(weights_only=True)`` of a regular file of at most ``limit`` bytes (:func:`open_whole`).

    torch.save writes a zip archive; one whose directory names an entry twice is refused
    (:func:`doubled_name`). Errors of torch.load itself (a truncated or damaged file) pass to
    the caller, which knows what the file should have been.
    """
    with open_whole(path, limit, what) as f:
        if f.read(4) == b"PK\x03\x04":
            f.seek(0)
            try:
                names = zipfile.ZipFile(f).namelist()
            except zipfile.BadZipFile:  # torch.load says what is wrong with it
                names = []
            twice = doubled_name(names)
            if twice is not None:
                raise UnreadableFile(f"the {what} {path} holds the entry {twice} twice, which two readers may take "
                                     "differently; the file is damaged or crafted, replace it")
        f.seek(0)
        return torch.load(f, map_location=map_location, weights_only=True)
