"""The run folder as fine-tuning writes it: config.json, metrics.jsonl, adapters.pt or weights.pt, summary.json,
and at the end metrics.csv and curves.png (``clip_min.train.pipeline.picture_run``).

(checkpoint.pt is ``clip_min.train.checkpoint``'s, selected.pt ``clip_min.train.selected``'s;
``clip_min.train.runs`` reads a finished folder back, ``clip_min.train.runlock`` says who may write.)

Which files are the run's own is what the run recorded: ``RUN/.written.json`` names every file
it writes, each noted (:func:`claim`) before the file is written. When ``--overwrite`` replaced an
earlier run, the earlier files this run did not write again are removed once it has finished
(:func:`remove_stale`), and no others. The file system's own identity of a file cannot tell them
apart: a freed inode number is handed to the next file created, often the very file that
replaces it, so a sweep by inode number deleted the checkpoint the run had just written.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..files import append_text, atomic_save, atomic_write_text
from ..lora import lora_state_dict
from ..model import CLIP
from ..rotation import Rotation
from ..weights import save_clip
from .config import TrainConfig

# Every file a run writes into its folder (train.py, and the stamps of eval.py table and search).
RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "selected.pt", "adapters.pt", "weights.pt",
             "summary.json", "metrics.csv", "curves.png", "table_request.json", "search_request.json")
RECORD_NAME = ".written.json"  # the names of the RUN_FILES this run wrote (claim)


def start_run_folder(out: Path, run_config: dict, resumed: dict | None) -> None:
    """Write config.json; metrics.jsonl starts empty, or holds the checkpoint's records when resuming."""
    out.mkdir(parents=True, exist_ok=True)
    # An earlier run's files (--overwrite) are not deleted here: each stays until this run renames
    # its own over it, and those it never writes go when it has finished (remove_stale).
    begin_record(out, resumed=resumed is not None)
    write_json(out / "config.json", run_config)
    # Records logged after the checkpoint are dropped: the resumed run logs those steps again.
    write_jsonl(out / "metrics.jsonl", resumed["progress"]["metrics"] if resumed else [])


def save_run(out: Path, model: CLIP, rotation: Rotation | None, config: TrainConfig) -> None:
    """Adapters (LoRA and rotation) apart from the frozen weights; the whole model for full fine-tuning."""
    adapters = {}
    if config.finetune == "lora":
        adapters["lora"] = lora_state_dict(model)
    else:
        save_clip(model, claim(out / "weights.pt"))
    if rotation is not None:
        adapters["rotation"] = {k: v.detach().cpu() for k, v in rotation.state_dict().items()}
    if adapters:
        atomic_save(adapters, claim(out / "adapters.pt"))


def append_jsonl(path: Path, record: dict) -> None:
    append_text(claim(path), json.dumps(record) + "\n")


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(claim(path), json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(claim(path), "".join(json.dumps(record) + "\n" for record in records))


def write_metrics_csv(folder: Path, records: list[dict]) -> Path:
    """The run's evaluations (metrics.jsonl's records) as metrics.csv, a row each and a column per number, for
    spreadsheets and plotting tools."""
    tasks = list(dict.fromkeys(task for record in records for task in record.get("transfer_f1") or {}))
    columns = ["step", "loss", "val_accuracy", "test_accuracy", *(f"transfer_f1_{task}" for task in tasks),
               "transfer_score", "skipped_steps"]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        f1 = record.get("transfer_f1") or {}
        values = {**record, **{f"transfer_f1_{task}": f1.get(task) for task in tasks}}
        writer.writerow(["" if values.get(column) is None else values[column] for column in columns])
    path = folder / "metrics.csv"
    atomic_write_text(claim(path), table.getvalue())
    return path


def run_files(folder: Path) -> list[str]:
    """The names of a run's files in ``folder``."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def recorded(folder: Path) -> list[str] | None:
    """The names in ``folder``'s record of what its run wrote; None where there is none, or it is damaged."""
    try:
        names = json.loads((folder / RECORD_NAME).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return names if isinstance(names, list) and all(isinstance(name, str) for name in names) else None


def begin_record(folder: Path, resumed: bool) -> None:
    """Start the record of the files this run writes into ``folder``, before it writes the first.

    A new run's record starts empty, even over an earlier run's (``--overwrite``). A resumed run
    goes on with the record its first session started; a run from before the record existed, or
    with a damaged one, takes every run file it finds as its own, so none of them is removed.
    """
    if resumed and recorded(folder) is not None:
        return
    atomic_write_text(folder / RECORD_NAME, json.dumps(run_files(folder) if resumed else []) + "\n")


def claim(path: Path) -> Path:
    """Note in the record of ``path``'s run folder that this run writes ``path``; return ``path``.

    The name is recorded before the file is written: a crash between the two leaves the earlier
    run's file counted as this run's, which keeps it, never this run's file counted as the
    earlier run's, which would delete it.
    """
    folder, name = path.parent, path.name
    names = recorded(folder)
    if names is None:  # no record yet (a folder from before it): every run file there is kept
        names = run_files(folder)
    if name not in names:
        atomic_write_text(folder / RECORD_NAME, json.dumps([*names, name]) + "\n")
    return path


def remove_stale(folder: Path) -> list[str]:
    """After a run has finished: remove the run files in ``folder`` that its record does not name, an earlier run's."""
    names = recorded(folder)
    if names is None:
        return []
    stale = [name for name in run_files(folder) if name not in names]
    for name in stale:
        (folder / name).unlink(missing_ok=True)
    return stale
