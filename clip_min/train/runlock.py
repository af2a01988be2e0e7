"""One run per run folder at a time, and what killed runs left behind cleared away.

Two train.py runs writing into one ``--out`` would interleave their files: one's config.json
beside the other's adapters, every metrics line twice. :func:`own_run_folder` lets one run own
the folder: it holds an exclusive ``flock`` on ``RUN/.lock``, which also records its pid for
the error message a second run gets. The kernel drops the lock when the owning process ends,
however it ends (SIGKILL and power cuts included), so a killed run never leaves the folder
stuck. (flock needs a POSIX system; on some network file systems it locks only per machine.)

An atomic write (``clip_min.files.atomic_write``) goes to ``.NAME.tmpPID`` first; a process
killed mid-write leaves that file, which for a full fine-tuning checkpoint of ViT-B/32 is
gigabytes. Whoever owns the folder knows no other run is writing into it, so such files from
other pids are leftovers and are removed when a run starts or resumes.
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"
TEMP_FILE = re.compile(r"\..+\.tmp(\d+)")  # atomic_write's temporary names


class RunFolderBusy(ValueError):
    """Another live run owns the folder; the message names it and the owner's pid."""


@contextmanager
def own_run_folder(folder: str | Path):
    """Create ``folder`` if needed and own it until the block ends; remove leftover temp files."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder}: a file is in the way of the run folder; move it or pass another --out")
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunFolderBusy(f"{folder} is in use by another run (pid {owner}); wait for it to finish, "
                            "or pass another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        remove_leftover_temp_files(folder)
        yield folder
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def remove_leftover_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.NAME.tmpPID`` files of other processes in a folder this process owns."""
    removed = []
    for path in folder.iterdir():
        match = TEMP_FILE.fullmatch(path.name)
        if match and int(match.group(1)) != os.getpid() and path.is_file():
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append(path)
            print(f"removed {path}, {size / 1e6:.1f} MB left by a run killed while writing it")
    return removed
