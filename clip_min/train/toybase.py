"""The toy base CLIP, shipped with clip_min as a small file and unpacked into the cache on first use.

Pretraining the toy base on a CPU gives a slightly different model on every machine: float
rounding differs with the thread count and the CPU's vector kernels, and hundreds of steps of
contrastive training amplify it (the old base's Desc>Cap read 0.58, 0.66 and 0.68 under one
thread, AVX2 kernels and two threads). So every machine starts from the same base: the one
pretrain.pretrain made with TOY_PRETRAIN and TOY_CAPTION_WEIGHT on the default toy world (one
thread), packed here as ``toy_base.pt``; ``python -m clip_min.train.toybase`` remakes one:

  every tensor in fp16, except that of the token embedding (49,408 rows) only the rows training
  changed are kept; the others are the seeded initialisation, rebuilt on unpacking (pretraining
  spares the embedding from weight decay, so a token the toy texts never use keeps its first row).

The file is a plain dict of tensors, ints and strings, read with weights_only=True, and its
SHA-256 is checked before it is read.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..files import UnreadableFile, atomic_save, atomic_write_text, load_tensors, read_whole
from ..model import CLIP, CLIPConfig
from ..weights import MAX_WEIGHTS_BYTES, WeightsError
from .pretrain import TOY_CAPTION_WEIGHT, TOY_CONFIG, TOY_PRETRAIN, evaluate_base, pretrain

TOY_BASE_FILE = Path(__file__).with_name("toy_base.pt")
TOY_BASE_SHA256 = "26f72730befe6b9f8adcf1d611bf2dbcfa4474b4aa65efc8ac6bac78c7b57828"
TOKENS = "token_embedding.weight"
# The packed base is 1.2 MB; a file of many times that is not one python -m clip_min.train.toybase wrote.
MAX_PACKED_BYTES = 64 << 20


def initial_state(config: CLIPConfig, seed: int) -> dict[str, torch.Tensor]:
    """The weights a CLIP of this shape starts from under this seed, as pretrain builds it."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CLIP(config).state_dict()


def pack(weights: Path, out: Path, config: CLIPConfig, seed: int) -> None:
    """Write OpenAI-format ``weights`` pretrained from ``seed`` as a packed base (see the module's doc)."""
    state = load_tensors(weights, MAX_WEIGHTS_BYTES, "weights file")
    changed = (state[TOKENS] != initial_state(config, seed)[TOKENS]).any(dim=1).nonzero().squeeze(1)
    atomic_save({
        "format": 1, "model": asdict(config), "seed": seed,
        "tensors": {name: t.half() for name, t in state.items() if name != TOKENS},
        "token_rows": changed, "token_values": state[TOKENS][changed].half(),
    }, out)


def unpack(packed: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    """The fp32 OpenAI-format state dict of a packed base, after checking the file's hash."""
    data = read_whole(packed, MAX_PACKED_BYTES, "packed toy base")
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected_sha256:
        raise WeightsError(f"{packed}: SHA-256 {digest[:12]}..., expected {expected_sha256[:12]}...; the shipped toy base "
                           "is damaged or was changed: restore it (git checkout -- clip_min/train/toy_base.pt)")
    saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = initial_state(CLIPConfig(**saved["model"]), saved["seed"])
    state.update({name: t.float() for name, t in saved["tensors"].items()})
    state[TOKENS][saved["token_rows"]] = saved["token_values"].float()
    return state


def toy_base(world: Path) -> Path:
    """The toy base's weights (OpenAI format) in the toy world's folder, unpacked there on first use."""
    folder = world / "base"
    weights, stamp = folder / "weights.pt", folder / "shipped.json"
    expected = json.dumps({"sha256": TOY_BASE_SHA256})
    if weights.is_file() and stamp.is_file() and _holds(stamp, expected):
        return weights
    print(f"unpacking the toy base CLIP (once; cached in {folder})")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_save(unpack(TOY_BASE_FILE, TOY_BASE_SHA256), weights)
    atomic_write_text(stamp, expected)
    return weights


def _holds(stamp: Path, expected: str) -> bool:
    """Whether the stamp file says ``expected``; one that cannot be read, or says more, does not."""
    try:
        return read_whole(stamp, len(expected.encode()), "toy base stamp") == expected.encode()
    except UnreadableFile:
        return False


def main(argv: list[str] | None = None) -> None:
    """Pretrain the toy base from scratch on the toy world, pack it, and say how to ship it."""
    from .pipeline import toy_world

    parser = argparse.ArgumentParser(prog="python -m clip_min.train.toybase", description=main.__doc__)
    parser.add_argument("--out", default="runs/toy_base", help="folder for the pretraining run and toy_base.pt")
    out = Path(parser.parse_args(argv).out)
    world, tasks = toy_world()
    pretrain(replace(TOY_PRETRAIN, out=str(out)), None, world / "concadia", tasks, caption_weight=TOY_CAPTION_WEIGHT)
    pack(out / "weights.pt", out / "toy_base.pt", TOY_CONFIG, TOY_PRETRAIN.seed)
    digest = hashlib.sha256((out / "toy_base.pt").read_bytes()).hexdigest()
    atomic_save(unpack(out / "toy_base.pt", digest), out / "unpacked.pt")
    result = evaluate_base(out / "unpacked.pt", world / "concadia", tasks, TOY_PRETRAIN)
    print(f"packed: {out / 'toy_base.pt'} ({(out / 'toy_base.pt').stat().st_size / 1e6:.2f} MB), sha256 {digest}; "
          f"unpacked: test preference accuracy {result['concadia_accuracy']:.3f}, transfer F1 {result['transfer_f1']}")
    print(f"to ship it: cp {out / 'toy_base.pt'} {TOY_BASE_FILE} and set TOY_BASE_SHA256 = \"{digest}\" in {__file__}")


if __name__ == "__main__":
    main()
