"""Run folders: what ``--out`` may be, one run per folder at a time, and what killed runs left behind.

``--out`` must be absent, empty, or a run folder (:func:`check_run_folder`). A folder holding a
run is refused unless the run goes on in it (``--resume``) or replaces it (``--overwrite``); a
folder holding anything else is always refused. ``runs/latest``, the default, is never refused:
an earlier run in it is moved aside to ``runs/latest-<its start time>`` (:func:`move_aside`),
so rerunning a command never loses a run.

Replacing with ``--overwrite`` deletes nothing at the start: each earlier file stays until this
run renames its own over it, and the earlier files this run does not write are removed only when
it has finished (``clip_min.train.folder.remove_stale``), known by the run's own record of
the files it wrote, never by what the file system says of them.

Two train.py runs writing into one ``--out`` would interleave their files: one's config.json
beside the other's adapters, every metrics line twice. :func:`own_run_folder` lets one run own
the folder: it holds an exclusive ``flock`` on ``RUN/.lock``, which also records its pid for
the error message a second run gets (a ``.lock`` that is a link, or a second name of another
file, is refused, never written through). The kernel drops the lock when the owning process ends,
however it ends (SIGKILL and power cuts included), so a killed run never leaves the folder
stuck. (flock needs a POSIX system; on some network file systems it locks only per machine.)

An atomic write (``clip_min.files.atomic_write``) goes to ``.NAME.tmpPID`` first; a process
killed mid-write leaves that file, which for a full fine-tuning checkpoint of ViT-B/32 is
gigabytes. Whoever owns the folder knows no other run is writing into it, so such files are
leftovers and are removed when a run starts or resumes: only the temporary names of the run's
own files (RUN_FILES and the record), only plain files, and only when the pid in the name is no
longer running or is the owner's own (an earlier process with the same pid, which in a container
every run can have; the owner has written nothing yet).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from ..files import failed, not_a_plain_file, open_own
from .folder import RECORD_NAME, RUN_FILES, recorded, run_files
from .runs import RunError, read_run_config

LOCK_NAME = ".lock"
DEFAULT_OUT = "runs/latest"  # train.py's --out when none is given
# atomic_write's temporary name for each of them: .NAME.tmpPID
TEMP_FILE = re.compile(r"\.(" + "|".join(re.escape(name) for name in (*RUN_FILES, RECORD_NAME)) + r")\.tmp(\d+)")


class RunFolderBusy(ValueError):
    """Another live run owns the folder; the message names it and the owner's pid."""


@contextmanager
def own_run_folder(folder: str | Path):
    """Create ``folder`` if needed and own it until the block ends; remove leftover temp files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder}: a file is in the way of the run folder; move it or pass another --out")
    folder.mkdir(parents=True, exist_ok=True)
    fd = open_own(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderBusy(f"{folder} is in use by another run (pid {owner}); wait for it to finish, "
                            "or pass another --out") from None
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:
            raise failed(err, "writing the owner's pid into it", folder / LOCK_NAME) from err
        remove_leftover_temp_files(folder)
        yield folder
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_leftover_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.NAME.tmpPID`` files of a run's own files whose writer is dead, in a folder this process owns."""
    removed = []
    for path in folder.iterdir():
        match = TEMP_FILE.fullmatch(path.name)
        if not match or (int(match.group(2)) != os.getpid() and pid_alive(int(match.group(2)))):
            continue
        info = path.lstat()
        if not_a_plain_file(path, info):  # a link, or a second name of another file: never a run's to remove
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
        print(f"removed {path}, {info.st_size / 1e6:.1f} MB left by a run killed while writing it")
    return removed


def check_run_folder(folder: str | Path, resume: bool, overwrite: bool) -> bool:
    """Refuse an ``--out`` that is neither absent, empty, nor a run folder this run may use.

    Returns whether the folder holds an earlier run that :func:`move_aside` should keep (the
    default folder, with neither --resume nor --overwrite).
    """
    folder = Path(folder)
    try:
        folder.stat()
    except FileNotFoundError:
        if folder.is_symlink():
            raise ValueError(f"--out {folder} is a symbolic link that leads to nothing ({os.readlink(folder)}); remove the "
                             "link or pass another --out") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"--out {folder}: a symbolic link on its path leads in a circle; remove the link or pass "
                             "another --out") from None
        raise
    if not folder.exists() or resume:
        return False
    if not folder.is_dir():
        raise ValueError(f"--out {folder}: a file is in the way of the run folder; move it or pass another --out")
    other = not_run_files(folder)
    found = run_files(folder)
    if other and "config.json" not in found:
        raise ValueError(f"--out {folder} is not empty and not a run folder (it holds {', '.join(other[:3])}"
                         f"{', ...' if len(other) > 3 else ''}); pass --out a new or empty folder")
    if not found or overwrite:
        return False
    if Path(os.path.abspath(folder)) == Path(os.path.abspath(DEFAULT_OUT)):
        return True
    own = recorded(folder)  # a summary.json the run did not write is of the run it replaced (--overwrite)
    state = "a finished run" if "summary.json" in found and (own is None or "summary.json" in own) else "an unfinished run"
    go_on = f"go on with it: python train.py --resume {folder}, or "
    try:
        if read_run_config(folder)["objective"] == "clip":
            state, go_on = f"{state} of pretraining, which writes no checkpoint to go on from", ""
    except RunError as err:  # a damaged config.json: the run can only be replaced
        state, go_on = f"{state} that cannot be resumed ({err})", ""
    raise ValueError(f"--out {folder} holds {state} ({', '.join(found)}); {go_on}replace it: add --overwrite (its files "
                     "stay until this run writes their replacements), or pass another --out")


def not_run_files(folder: Path) -> list[str]:
    """The names in ``folder`` that no run wrote: neither a run's files, its record, its lock, nor their temporary names."""
    ours = set(RUN_FILES) | {LOCK_NAME, RECORD_NAME}
    return sorted(p.name for p in folder.iterdir() if p.name not in ours and not TEMP_FILE.fullmatch(p.name))


def resumed_config(folder: str | Path) -> dict:
    """The config.json of the run ``train.py --resume folder`` goes on with; where there is none, one line with a way on."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        if not not_run_files(folder):  # a run killed before it wrote config.json leaves only its lock
            raise ValueError(f"--resume {folder}: no run has started there yet (no config.json); start the run with its "
                             f"command (--out {folder}), without --resume")
        raise ValueError(f"--resume {folder} is not a run folder (no config.json); pass --resume the --out folder of a "
                         "train.py run")
    try:
        return read_run_config(folder)
    except RunError as err:
        raise ValueError(f"--resume: {err}; start the run again with its command and --overwrite, or with another "
                         "--out") from None


def move_aside(folder: str | Path) -> Path:
    """Rename the run in ``folder`` to ``folder-<its start time>`` (the time config.json was written); return it."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime((folder / "config.json").stat().st_mtime))
    target = folder.with_name(f"{folder.name}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}-{stamp}-{n}")
    fd = open_own(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live run keeps its folder
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise RunFolderBusy(f"{folder} is in use by another run (pid {owner}); wait for it to finish, "
                                "or pass another --out") from None
        os.rename(folder, target)
    finally:
        os.close(fd)
    return target
