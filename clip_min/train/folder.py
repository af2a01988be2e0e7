"""The run folder as fine-tuning writes it: config.json, metrics.jsonl, adapters.pt or weights.pt, summary.json.

(checkpoint.pt is ``clip_min.train.checkpoint``'s, selected.pt ``clip_min.train.selected``'s;
``clip_min.train.runs`` reads a finished folder back.) Each file is claimed before it is written
(``clip_min.train.runlock.claim``), so that the run's record names every file that is its own.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import append_text, atomic_save, atomic_write_text
from ..lora import lora_state_dict
from ..model import CLIP
from ..rotation import Rotation
from ..weights import save_clip
from .config import TrainConfig
from .runlock import begin_record, claim


def start_run_folder(out: Path, run_config: dict, resumed: dict | None) -> None:
    """Write config.json; metrics.jsonl starts empty, or holds the checkpoint's records when resuming."""
    out.mkdir(parents=True, exist_ok=True)
    # An earlier run's files (--overwrite) are not deleted here: each stays until this run renames
    # its own over it, and those it never writes go when it has finished (runlock.remove_stale).
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
