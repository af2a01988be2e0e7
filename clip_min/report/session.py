"""The model an eval.py command measures: the options that choose it, loading it, and its text features.

Each command takes the model options (``--weights``, ``--run``, ``--step``, ``--device``,
``--amp``) and prints its result on stdout, one line or a table (``--json`` for JSON); notes on
what was skipped or loaded go to stderr. Errors the user can fix raise ValueError (or its
subclasses DataError, RunError, WeightsError) with a one-line message that eval.py prints.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass

import torch

from ..files import content_fingerprint
from ..model import CLIP
from ..sorted_parts import in_sorted_parts
from ..tokenizer import get_tokenizer
from ..train.device import mixed_precision, resolve_device
from ..train.runs import LoadedRun, add_step_option, load_model


def add_model_options(p: argparse.ArgumentParser, step_by_recipe: bool = False) -> None:
    """The options every command shares: which model, on which device, in which precision."""
    p.add_argument("--weights", help="OpenAI (.pt) or Hugging Face CLIP weights; default: the toy world's base")
    p.add_argument("--run", help="a train.py run folder: its base weights with its adapters, or its weights.pt")
    add_step_option(p, step_by_recipe)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast (auto: bf16/fp16 on CUDA, off on CPU; default: the run's, else auto)")


@dataclass
class Session:
    """A loaded model and how to run it."""

    loaded: LoadedRun
    device: str
    autocast: object  # a context-manager factory: nullcontext or a partial torch.autocast
    vision_id: str  # identity of the vision tower's weights, the key of cached image features

    @property
    def model(self) -> CLIP:
        return self.loaded.model


def open_model(args: argparse.Namespace) -> Session:
    if args.weights is not None and args.run is not None:
        raise ValueError("give --weights or --run, not both: a run folder names its own base weights")
    device = resolve_device(args.device)
    with notes_to_stderr():
        loaded = load_model(args.weights, args.run, device, args.step)
    return Session(loaded, device, measured_in(args.amp, loaded.config, device), vision_id(loaded))


def measured_in(amp: str | None, config: dict, device: str):
    """The autocast factory a model is measured in: ``amp`` if given, else the precision its run
    trained in (config.json's: the authors' recipe is fp32, as the release evaluates), else auto."""
    autocast, _ = mixed_precision(amp or config.get("amp") or "auto", device)
    return autocast


def notes_to_stderr():
    """Route the package's progress notes to stderr, so that stdout holds only the result."""
    return contextlib.redirect_stdout(sys.stderr)


def vision_id(loaded: LoadedRun) -> str:
    """Fingerprint of the weights the vision tower came from.

    A LoRA run on the text tower leaves the vision tower as it was, so its image features are
    the base model's and the cache built for the base serves it too.
    """
    config = loaded.config
    base = config.get("weights")
    # The base's fingerprint is of the bytes loaded, when they were (plain weights, a LoRA run's base).
    base_id = loaded.weights_id or (content_fingerprint(base) if base else None)
    if "finetune" not in config:  # plain weights, not a run
        return base_id
    vision_frozen = config["finetune"] == "lora" and config.get("towers", "text") == "text" and config.get("objective") != "clip"
    if vision_frozen:
        return base_id
    parts = [base_id] if base_id else []
    own = ["selected.pt"] if isinstance(loaded.step, int) else ["weights.pt", "adapters.pt"]
    parts += [content_fingerprint(loaded.folder / name) for name in own if (loaded.folder / name).is_file()]
    return "|".join(parts)


def text_features(session: Session, texts: list[str]) -> torch.Tensor:
    """Text features (N, embed_dim), float32 on the CPU; texts past the context are cut, with a note."""
    features, cut = encode_texts(session.model, texts, session.device, session.autocast)
    if cut:
        context = session.model.config.context_length
        print(f"{cut} of {len(texts)} texts are longer than {context} tokens and were cut", file=sys.stderr)
    return features


@torch.no_grad()
def encode_texts(model: CLIP, texts: list[str], device: str, autocast, batch_size: int = 256) -> tuple[torch.Tensor, int]:
    """Text features (N, embed_dim), float32 on the CPU, and how many texts were cut to the context."""
    tokens, cut = get_tokenizer().tokenize_counting_cuts(texts, model.config.context_length)  # (N, context)
    out = []
    for start in range(0, len(texts), batch_size):
        with autocast():
            batch = tokens[start : start + batch_size].to(device)
            out.append(in_sorted_parts(model.encode_text, batch).float().cpu())
    return (torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)), cut


def print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2))
