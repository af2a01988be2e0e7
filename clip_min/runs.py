"""Loading what ``train.py`` wrote: a run folder back into a model (and its rotation).

A run keeps two models: the one Appendix C selects (``selected.pt``, the default everywhere) and
the one it ended with (``adapters.pt`` or ``weights.pt``; ``step="last"``, eval.py's ``--step last``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import selected
from .lora import apply_lora, load_lora_state_dict
from .model import CLIP
from .rotation import Rotation
from .weights import WeightsError, load_clip


class RunError(ValueError):
    """A run folder that cannot be loaded; the message says what is missing."""


@dataclass
class LoadedRun:
    model: CLIP  # eval mode; LoRA attached (not merged) for LoRA runs
    rotation: Rotation | None  # the learned DAS rotation of IIT-DAS and joint runs
    config: dict  # the run's config.json (TrainConfig fields, weights and data resolved)
    folder: Path
    step: int | str | None = None  # the selected step's number, "last", or None for plain weights

STEPS = ("selected", "last")  # which of a run's models: Appendix C's selected step, or the last


def add_step_option(parser) -> None:
    """eval.py's ``--step``, shared by every command that takes ``--run``."""
    parser.add_argument("--step", default="selected", choices=STEPS,
                        help="with --run: the step Appendix C selected (default) or the last step's weights")


def read_run_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "config.json"
    if not folder.is_dir():
        raise RunError(f"run folder not found: {folder}; pass --run the --out folder of a train.py run")
    if not path.is_file():
        raise RunError(f"{folder} is not a train.py run folder: config.json is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunError(f"{path} is not valid JSON ({err.msg}); the run folder is damaged") from None


def load_run(folder: str | Path, device: str = "cpu", step: str = "selected") -> LoadedRun:
    """The model a run trained at its selected step (default) or its last: base weights plus its tensors."""
    if step not in STEPS:
        raise ValueError(f"step {step!r}: use one of {', '.join(STEPS)}")
    folder = Path(folder)
    config = read_run_config(folder)
    # Pretraining (--objective clip) selects nothing: it keeps its last weights only.
    if step == "selected" and config.get("objective") != "clip":
        return _load_selected(folder, config, device)
    adapters_path, weights_path = folder / "adapters.pt", folder / "weights.pt"
    if config.get("finetune") == "full" or config.get("objective") == "clip":
        if not weights_path.is_file():
            raise RunError(f"{folder}: weights.pt is missing; a full fine-tuning run writes it at its end")
        model = load_clip(weights_path, device)
    else:
        if not adapters_path.is_file():
            raise RunError(f"{folder}: adapters.pt is missing; a LoRA run writes it at its end")
        base = config.get("weights")
        if not base or not Path(base).is_file():
            raise RunError(f"{folder}: its base weights {base!r} are gone; the run's config.json names them")
        model = load_clip(base, device)
        apply_lora(model, config["lora_rank"], config["lora_alpha"], config["lora_dropout"],
                   config["lora_targets"], config["towers"])
    rotation = None
    if adapters_path.is_file():
        try:
            adapters = torch.load(adapters_path, map_location=device, weights_only=True)
        except Exception as err:  # torch raises many types for a damaged file
            raise RunError(f"{adapters_path} cannot be read ({type(err).__name__}); the run folder is damaged") from None
        if "lora" in adapters:
            load_lora_state_dict(model, adapters["lora"])
        if "rotation" in adapters:
            rotation = Rotation(model.config.text_width).to(device)
            rotation.load_state_dict(adapters["rotation"])
            rotation.eval()
    model.eval()
    return LoadedRun(model, rotation, config, folder, "last")


def _load_selected(folder: Path, config: dict, device: str) -> LoadedRun:
    """The base weights with the tensors of ``selected.pt`` put back (LoRA attached for LoRA runs)."""
    path = folder / selected.NAME
    if not path.is_file():
        raise RunError(f"{folder}: {selected.NAME} is missing (no evaluation after step 0 yet, or a run from before "
                       "clip_min kept the selected step); pass --step last for its last weights")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise RunError(f"{path} cannot be read ({type(err).__name__}); the run folder is damaged") from None
    base = config.get("weights")
    if not base or not Path(base).exists():
        raise RunError(f"{folder}: its base weights {base!r} are gone; the run's config.json names them")
    model = load_clip(base, device)
    if config.get("finetune") == "lora":
        apply_lora(model, config["lora_rank"], config["lora_alpha"], config["lora_dropout"],
                   config["lora_targets"], config["towers"])
    try:
        selected.put_back(state, model)
    except ValueError as err:
        raise RunError(f"{path}: {err}") from None
    rotation = None
    if state.get("rotation") is not None:
        rotation = Rotation(model.config.text_width).to(device)
        rotation.load_state_dict(state["rotation"])
        rotation.eval()
    model.eval()
    return LoadedRun(model, rotation, config, folder, int(state["step"]))


def load_model(weights: str | None, run: str | None, device: str = "cpu", step: str = "selected") -> LoadedRun:
    """eval.py's choice: a run folder (``--run``, at ``step``), explicit weights, or else the toy base."""
    if run is not None:
        return load_run(run, device, step)
    if weights is None:
        from .pipeline import toy_world
        from .pretrain import toy_base

        world, _ = toy_world()
        weights = str(toy_base(world))
    if not Path(weights).exists():
        raise WeightsError(f"{weights}: no such file or folder; pass --weights an OpenAI or Hugging Face CLIP checkpoint")
    return LoadedRun(load_clip(weights, device), None, {"weights": str(weights)}, Path(weights))
