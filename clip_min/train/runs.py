"""Loading what ``train.py`` wrote: a run folder back into a model (and its rotation).

A run keeps two models: the one Appendix C selects (``selected.pt``, the default everywhere) and
the one it ended with (``adapters.pt`` or ``weights.pt``; ``step="last"``, eval.py's ``--step last``).
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from . import selected
from .config import IIT_OBJECTIVES, OBJECTIVES, TrainConfig, as_recorded
from ..data.toy import toy_world_dir
from ..files import UnreadableFile, load_tensors, read_json
from ..lora import apply_lora, load_lora_state_dict
from ..model import CLIP
from ..rotation import Rotation
from ..weights import MAX_WEIGHTS_BYTES, check_vocabulary, load_clip, load_weights


class RunError(ValueError):
    """A run folder that cannot be loaded; the message says what is missing."""


# A run's config.json is about 1 kB; its longest field, the list of transfer folders, stays far below this.
MAX_RUN_CONFIG_BYTES = 1 << 20
# selected.pt and adapters.pt hold some of a model's tensors, never more than the model.
MAX_RUN_TENSORS_BYTES = MAX_WEIGHTS_BYTES
# config.json fields every run has, and those a LoRA run needs to rebuild its adapters.
REQUIRED_FIELDS = ("objective", "finetune")
LORA_FIELDS = ("weights", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "towers")


@dataclass
class LoadedRun:
    model: CLIP  # eval mode; LoRA attached (not merged) for LoRA runs
    rotation: Rotation | None  # the learned DAS rotation of IIT-DAS and joint runs
    config: dict  # the run's config.json (TrainConfig fields, weights and data resolved)
    folder: Path
    step: int | str | None = None  # the selected step's number, "last", or None for plain weights
    weights_id: str | None = None  # fingerprint of the (base) weights' bytes as loaded

    def __repr__(self) -> str:
        """One line for a notebook or a prompt: which run, which step, what kind of model (not every weight)."""
        if not self.config.get("objective"):
            return f"LoadedRun({self.folder}: plain weights, text width {self.model.config.text_width})"
        kind = f"{self.config['objective']} {self.config['finetune']}"
        rotation = f", rotation at block {self.config['layer']} (k = {self.config['intervention_size']})" if self.rotation is not None else ""
        return f"LoadedRun({self.folder}: {kind}, step {self.step}{rotation})"

    def das_site(self) -> tuple[torch.Tensor, int, int] | None:
        """Where Eq. 7 can route the gradient: (R, block, k) of the run's rotation; None without one."""
        if self.rotation is None:
            return None
        return self.rotation.R.detach(), int(self.config["layer"]), int(self.config["intervention_size"])

STEPS = ("selected", "last")  # which of a run's models: Appendix C's selected step, or the last
# The model a recipe's measurements after training take (Table 3, the BLV correlations): the paper
# reports Appendix C's selected step; the release measures what fit() leaves, early stopping off,
# after its 10 epochs (finetune_clip.py, run_iit_clip.py).
RECIPE_STEP = {"paper": "selected", "authors": "last"}


def add_step_option(parser, by_recipe: bool = False) -> None:
    """eval.py's ``--step``, shared by every command that takes ``--run``; ``by_recipe``: no default, RECIPE_STEP's."""
    if by_recipe:
        parser.add_argument("--step", choices=STEPS, help="with --run(s): the step Appendix C selected or the last "
                                                          "step's weights (default: selected for the paper's recipe, "
                                                          "last for the authors')")
    else:
        parser.add_argument("--step", default="selected", choices=STEPS,
                            help="with --run: the step Appendix C selected (default) or the last step's weights")


def run_recipe(folder: str | Path) -> str:
    """The recipe a run trained with, as recorded (a run from before the recipes followed the paper's)."""
    return as_recorded(read_run_config(folder))["recipe"]


def read_run_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / "config.json"
    if not folder.is_dir():
        raise RunError(f"run folder not found: {folder}; pass --run the --out folder of a train.py run")
    if not os.path.lexists(path):
        raise RunError(f"{folder} is not a train.py run folder: config.json is missing")
    try:
        config = read_json(path, MAX_RUN_CONFIG_BYTES, "run config", "the run folder is damaged")
    except UnreadableFile as err:
        raise RunError(str(err)) from None
    if not isinstance(config, dict):
        raise RunError(f"{path} holds a JSON {type(config).__name__}, not the object train.py writes; the run folder is damaged")
    missing = [name for name in REQUIRED_FIELDS if name not in config]
    if missing:
        raise RunError(f"{path} lacks {', '.join(missing)}; the run folder is damaged or not from train.py")
    for name, value in config.items():
        problem = field_problem(name, value)
        if problem:
            raise RunError(f"{path}: field {name} is {json.dumps(value)[:40]}, {problem}; the run folder is damaged")
    return config


# The type of each config.json field: TrainConfig's fields, and what train.py adds beside them.
FIELD_TYPES = {**typing.get_type_hints(TrainConfig), "weights_id": str | None, "transfer": list[str]}
CHOICES = dict(objective=OBJECTIVES, finetune=("lora", "full"), lora_targets=("qv", "attn", "all-linear"),
               towers=("text", "both"))
TYPE_NAMES = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def _accepts(kind, value) -> bool:
    """Whether a JSON value can stand for a field of type ``kind`` (one member of its union)."""
    if kind in (type(None), bool, str):
        return value is None if kind is type(None) else isinstance(value, kind)
    if kind in (int, float):
        return isinstance(value, int if kind is int else (int, float)) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)  # tuple[str, ...]: a JSON list


def field_problem(name: str, value) -> str | None:
    """Why a config.json value cannot be the field it names, or None if it can (unknown names pass)."""
    hint = FIELD_TYPES.get(name)
    if hint is None:
        return None
    kinds = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if not any(_accepts(kind, value) for kind in kinds):
        return "expected " + " or ".join(TYPE_NAMES.get(kind, "a list of strings") for kind in kinds)
    if name in CHOICES and value not in CHOICES[name]:
        return f"expected one of {', '.join(CHOICES[name])}"
    return None


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
    weights_id = None
    if config.get("finetune") == "full" or config.get("objective") == "clip":
        if not os.path.lexists(weights_path):
            raise RunError(f"{folder}: weights.pt is missing; a full fine-tuning run writes it at its end")
        model = load_clip(weights_path, device)
    else:
        if not os.path.lexists(adapters_path):
            raise RunError(f"{folder}: adapters.pt is missing; a LoRA run writes it at its end")
        model, weights_id = _base_model(folder, config, device)
    rotation = None
    if os.path.lexists(adapters_path):
        adapters = read_adapters(adapters_path, device)
        if config["finetune"] == "lora" and config["objective"] != "clip":
            if "lora" not in adapters:
                raise RunError(f"{adapters_path} has no LoRA tensors ('lora'), so it would evaluate the bare base model; "
                               "the run folder is damaged")
            try:
                load_lora_state_dict(model, adapters["lora"])
            except ValueError as err:
                raise RunError(f"{adapters_path}: {err}; the run folder is damaged") from None
        rotation = _rotation(model, config, adapters.get("rotation"), adapters_path, device)
    model.eval()
    return LoadedRun(model, rotation, config, folder, "last", weights_id)


def _base_model(folder: Path, config: dict, device: str) -> tuple[CLIP, str]:
    """The run's base weights, checked to be the ones it trained on, with LoRA attached for LoRA runs; and their fingerprint."""
    lora = config["finetune"] == "lora"
    missing = [name for name in (LORA_FIELDS if lora else ("weights",)) if name not in config]
    if missing:
        raise RunError(f"{folder / 'config.json'} lacks {', '.join(missing)}, needed to rebuild the model; "
                       "the run folder is damaged")
    base = config["weights"]
    if isinstance(base, str) and not os.path.lexists(base) and Path(base) == toy_world_dir() / "base" / "weights.pt":
        # The toy base lives in the cache, which a cleared cache or a new toy world empties: unpack it again.
        from .pipeline import toy_world
        from .toybase import toy_base

        toy_base(toy_world()[0])
    # A base that is there in name is checked as any weights are (load_weights): a FIFO, a device or
    # a file of absurd size named by a received config.json is refused before it is read.
    if not isinstance(base, str) or not os.path.lexists(base):
        raise RunError(f"{folder}: its base weights {base!r} are gone; the run's config.json names them")
    model, weights_id = load_weights(base, device)
    check_base(folder, base, config.get("weights_id"), weights_id)
    check_vocabulary(model, base)
    if lora:
        try:
            apply_lora(model, config["lora_rank"], config["lora_alpha"], config["lora_dropout"],
                       config["lora_targets"], config["towers"])
        except (ValueError, TypeError) as err:
            raise RunError(f"{folder / 'config.json'}: its LoRA settings cannot be applied ({err}); the run folder is damaged") from None
    return model, weights_id


def _rotation(model: CLIP, config: dict, state: dict | None, path: Path, device: str) -> Rotation | None:
    """The run's DAS rotation from its saved state; IIT-DAS and joint runs must have one, and their site."""
    site = [name for name in ("layer", "intervention_size") if config.get(name) is None]
    if config["objective"] in IIT_OBJECTIVES and site:
        raise RunError(f"{path.parent / 'config.json'} lacks {', '.join(site)}, where an {config['objective']} run "
                       "intervenes; the run folder is damaged or not from train.py")
    if state is None:
        if config["objective"] in ("iit-das", "joint"):
            raise RunError(f"{path} has no rotation, which an {config['objective']} run saves; the run folder is damaged")
        return None
    try:
        rotation = Rotation(model.config.text_width, as_recorded(config)["orthogonal_map"]).to(device)
        rotation.load_state_dict(state)
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise RunError(f"{path}: its rotation does not fit this model ({first}); the run folder is damaged") from None
    return rotation.eval()


# The parameters full fine-tuning trains (clip_min.train.setup.trainable_parameters), by name.
TEXT_TOWER = ("token_embedding.", "transformer.", "ln_final.", "positional_embedding", "text_projection")


def trained_names(model: CLIP, config: dict) -> set[str]:
    """The names of the parameters a run with this config.json trained: LoRA's A and B, or the tower(s)."""
    names = [name for name, _ in model.named_parameters()]
    if config["finetune"] == "lora":
        return {name for name in names if name.endswith((".lora_A", ".lora_B"))}
    towers = TEXT_TOWER + (("visual.",) if config.get("towers") == "both" else ())
    trained = {name for name in names if name.startswith(towers)}
    if as_recorded(config)["logit_scale"] == "trained":  # the authors' full fine-tuning trains the temperature too
        trained.add("logit_scale")
    return trained


def check_base(folder: Path, base: str, weights_id: str | None, loaded_id: str) -> None:
    """Refuse base weights whose bytes, as loaded (``loaded_id``), are not those the run trained on (config.json's weights_id)."""
    if weights_id is not None and loaded_id != weights_id:
        raise RunError(f"{folder}: its base weights {base} are not the ones it was trained on (their contents changed); "
                       "restore that file, or evaluate with the weights the run started from")


def _read_tensors(path: Path, device: str):
    try:
        return load_tensors(path, MAX_RUN_TENSORS_BYTES, path.name, device)
    except UnreadableFile as err:
        raise RunError(str(err)) from None
    except Exception as err:  # torch raises many types for a damaged file
        raise RunError(f"{path} cannot be read ({type(err).__name__}); the run folder is damaged") from None


def _check_finite(path: Path, parts: dict) -> None:
    broken = [f"{part}.{name}" for part, tensors in parts.items() for name, t in tensors.items() if not torch.isfinite(t).all()]
    if broken:
        raise RunError(f"{path}: {broken[0]} holds NaN or infinite values; the run diverged or the file is damaged")


def _is_tensor_dict(part) -> bool:
    return isinstance(part, dict) and all(isinstance(t, torch.Tensor) for t in part.values())


def read_adapters(path: Path, device: str) -> dict:
    """adapters.pt, checked: a dict of dicts of finite tensors."""
    adapters = _read_tensors(path, device)
    if not isinstance(adapters, dict) or not all(_is_tensor_dict(part) for part in adapters.values()):
        raise RunError(f"{path} is not what train.py writes (a dict of 'lora' and 'rotation' tensors); the run folder is damaged")
    other = sorted(str(part) for part in adapters if part not in ("lora", "rotation"))
    if other:
        raise RunError(f"{path} holds {other[0]!r} besides 'lora' and 'rotation', tensors no run trains; the run folder is damaged")
    _check_finite(path, adapters)
    return adapters


def read_selected(path: Path, device: str) -> dict:
    """selected.pt, checked: its step, the trained tensors (finite) and the rotation or None."""
    state = _read_tensors(path, device)
    if (not isinstance(state, dict) or not isinstance(state.get("step"), int) or not _is_tensor_dict(state.get("trainable"))
            or not (state.get("rotation") is None or _is_tensor_dict(state["rotation"]))):
        raise RunError(f"{path} is not what train.py writes (step, trainable tensors, rotation); the run folder is damaged")
    _check_finite(path, {"trainable": state["trainable"], "rotation": state["rotation"] or {}})
    return state


def _load_selected(folder: Path, config: dict, device: str) -> LoadedRun:
    """The base weights with the tensors of ``selected.pt`` put back (LoRA attached for LoRA runs)."""
    path = folder / selected.NAME
    if not os.path.lexists(path):
        raise RunError(f"{folder}: {selected.NAME} is missing (no evaluation after step 0 yet, or a run from before "
                       "clip_min kept the selected step); pass --step last for its last weights")
    state = read_selected(path, device)
    model, weights_id = _base_model(folder, config, device)
    try:
        selected.put_back(state, model, trained_names(model, config))
    except ValueError as err:
        raise RunError(f"{path}: {err}") from None
    rotation = _rotation(model, config, state["rotation"], path, device)
    model.eval()
    return LoadedRun(model, rotation, config, folder, state["step"], weights_id)


def load_model(weights: str | None, run: str | None, device: str = "cpu", step: str = "selected") -> LoadedRun:
    """eval.py's choice: a run folder (``--run``, at ``step``), explicit weights, or else the toy base."""
    if run is not None:
        return load_run(run, device, step)
    if weights is None:
        from .pipeline import toy_world
        from .toybase import toy_base

        world, _ = toy_world()
        weights = str(toy_base(world))
    model, weights_id = load_weights(weights, device)
    check_vocabulary(model, weights)
    return LoadedRun(model, None, {"weights": str(weights)}, Path(weights), weights_id=weights_id)
