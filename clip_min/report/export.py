"""``eval.py export``: a run's model with its LoRA merged in, as OpenAI or Hugging Face weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..files import check_output
from ..lora import merge_lora, unmerge_lora
from ..train.runs import read_run_config
from ..model import CLIP
from ..weights import save_clip, save_hf
from .session import add_model_options, open_model


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export`` to eval.py's subcommands."""
    p = subparsers.add_parser("export", help="write a run's model, LoRA merged, as OpenAI or Hugging Face weights")
    add_model_options(p)
    p.add_argument("--format", required=True, choices=["openai", "hf"],
                   help="openai: one state-dict file for clip.load; hf: a folder for CLIPModel.from_pretrained")
    p.add_argument("--out", required=True, help="file (openai) or folder (hf) to write")
    p.set_defaults(func=export_command)


def without_adapters(model: CLIP) -> CLIP:
    """A plain CLIP holding copies of ``model``'s weights as they are now (merged LoRA included)."""
    with torch.device("meta"):
        plain = CLIP(model.config)
    names = set(plain.state_dict())
    state = {name: tensor.detach().clone().cpu() for name, tensor in model.state_dict().items() if name in names}
    plain.load_state_dict(state, strict=True, assign=True)
    return plain.eval()


def export_command(args: argparse.Namespace) -> int:
    if args.run is None and args.weights is None:
        raise ValueError("export needs --run (a train.py run folder), or --weights to convert a checkpoint")
    base = read_run_config(args.run).get("weights") if args.run is not None else None
    check_output(args.out, "--out", [("--weights", args.weights), ("--run", args.run), ("the run's base", base)],
                 holds=args.format == "hf")
    session = open_model(args)
    model = session.model
    merge_lora(model)  # W <- W + (alpha / r) B A in every adapted layer
    plain = without_adapters(model)
    unmerge_lora(model)
    out = Path(args.out)
    if args.format == "openai":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_clip(plain, out)
    else:
        save_hf(plain, out)
    if session.loaded.rotation is not None:
        print("note: the run's DAS rotation only shapes training and is not part of the exported model", file=sys.stderr)
    print(f"wrote {out} ({args.format} format)")
    return 0
