"""Speed and memory of clip_min against OpenAI's reference clip/model.py, measured in one run.

    python bench/speed.py

Both implementations get the same random ViT-B/32 weights and the same inputs, in fp32 on the
CPU under torch.no_grad: a batch of 8 random images, and a batch of 24 texts (the paper's 12
images, each with a caption and a description) of 10 to 40 tokens, Concadia's range, zero-padded
to 77 as OpenAI's tokenize does. OpenAI's encode_text runs all 77 positions; ours runs the batch
as clip_min's evaluation and training code do on a CPU (``clip_min.sorted_parts``): in two halves
sorted by length, each cut to its longest text.

Throughput: both models are loaded in this process and called in turn, ours then OpenAI's, for a
few rounds after one warm-up call each; the fastest call of each counts (as timeit advises: slower
calls measure other load on the machine, which interleaving also spreads evenly over both).

Memory: the peak resident memory one encode call adds on top of the loaded model, each measured
in a fresh subprocess (this script with --measure-memory) so that none inherits another's
allocator caches or high-water mark. The subprocess loads the model and the inputs, resets the
kernel's high-water mark of its resident set (writing 5 to /proc/self/clear_refs, Linux 4.0 or
later) so that it restarts at the current size, runs one call, and reads the mark (VmHWM in
/proc/self/status) minus the resident size before the call. getrusage's ru_maxrss would not do:
it also keeps the largest mark any exited thread saw, so the reset does not always reach it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clip_min.model import CLIP, CLIPConfig  # noqa: E402
from clip_min.sorted_parts import in_sorted_parts  # noqa: E402
from clip_min.weights import load_clip, save_clip  # noqa: E402

IMAGE_BATCH = 8
TEXT_BATCH = 24
TEXT_LENGTHS = (10, 40)  # tokens, start and end included
ROUNDS = 6  # timed calls of each implementation, after one warm-up call
TARGETS = {"image": 1.0, "text": 2.5}  # wanted ratio ours / OpenAI, in items per second


def make_inputs(tower: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if tower == "image":
        return torch.randn(IMAGE_BATCH, 3, 224, 224, generator=generator)
    tokens = torch.zeros(TEXT_BATCH, 77, dtype=torch.long)
    lengths = torch.randint(TEXT_LENGTHS[0], TEXT_LENGTHS[1] + 1, (TEXT_BATCH,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        tokens[row, :length] = torch.randint(1, 49406, (length,), generator=generator)
        tokens[row, 0], tokens[row, length - 1] = 49406, 49407  # <|startoftext|>, <|endoftext|>
    return tokens


def openai_clip_module():
    """OpenAI's clip/model.py, loaded by file path (its package __init__ needs torchvision)."""
    folder = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("openai_clip_model", os.path.join(folder, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def openai_clip(weights: Path, shape: CLIPConfig = CLIPConfig()) -> torch.nn.Module:
    """OpenAI's CLIP class with our shapes (ViT-B/32 by default), loaded from our weights file."""
    s = shape
    model = openai_clip_module().CLIP(s.embed_dim, s.image_resolution, s.vision_layers, s.vision_width, s.vision_patch_size,
                                      s.context_length, s.vocab_size, s.text_width, s.text_heads, s.text_layers)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


def status_bytes(field: str) -> int:
    """VmRSS (resident now) or VmHWM (its high-water mark) from /proc/self/status, in bytes."""
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # the kernel reports kB


def load(implementation: str, weights: Path) -> torch.nn.Module:
    return load_clip(weights) if implementation == "ours" else openai_clip(weights)


def encoder(model: torch.nn.Module, tower: str):
    if tower == "image":
        return model.encode_image
    return partial(in_sorted_parts, model.encode_text) if isinstance(model, CLIP) else model.encode_text


def measure_memory(implementation: str, tower: str, weights: Path) -> float:
    """Runs in a subprocess: MB that one call adds to the resident set of the loaded model."""
    encode, inputs = encoder(load(implementation, weights), tower), make_inputs(tower)
    with torch.no_grad():
        with open("/proc/self/clear_refs", "w") as file:
            file.write("5")  # the high-water mark now restarts at the current resident size
        before = status_bytes("VmRSS")
        encode(inputs)
        peak = status_bytes("VmHWM")
    return (peak - before) / 2**20


def measure_speed(weights: Path) -> dict:
    """Fastest call of each implementation and tower, interleaved; and the features, to compare."""
    models = {implementation: load(implementation, weights) for implementation in ("ours", "openai")}
    results = {}
    with torch.no_grad():
        for tower in ("image", "text"):
            inputs = make_inputs(tower)
            seconds = {implementation: [] for implementation in models}
            features = {implementation: encoder(model, tower)(inputs) for implementation, model in models.items()}
            for _ in range(ROUNDS):
                for implementation, model in models.items():
                    start = time.perf_counter()
                    encoder(model, tower)(inputs)
                    seconds[implementation].append(time.perf_counter() - start)
            for implementation in models:
                results[implementation, tower] = {"per_second": len(inputs) / min(seconds[implementation]), "features": features[implementation]}
    return results


def run_memory(implementation: str, tower: str, weights: Path) -> float:
    command = [sys.executable, __file__, "--measure-memory", implementation, tower, str(weights)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"memory of {implementation} {tower} failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure-memory", nargs=3, metavar=("IMPL", "TOWER", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        implementation, tower, weights = args.measure_memory
        print(measure_memory(implementation, tower, Path(weights)))
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as temp:
        weights = Path(temp) / "vit-b-32.pt"
        torch.manual_seed(0)
        save_clip(CLIP(CLIPConfig()), weights)
        results = measure_speed(weights)
        for key in results:
            results[key]["peak_mb"] = run_memory(*key, weights)

    lengths = (make_inputs("text") == 49407).nonzero()[:, 1] + 1
    print(
        f"clip_min vs OpenAI clip/model.py: random ViT-B/32 weights, fp32, CPU, {torch.get_num_threads()} threads, "
        f"no_grad; torch {torch.__version__}; load average {load_before:.1f} before the run"
    )
    print(
        f"images: batch {IMAGE_BATCH}; texts: batch {TEXT_BATCH}, {int(lengths.min())}..{int(lengths.max())} tokens "
        f"padded to 77; fastest of {ROUNDS} interleaved calls"
    )
    print(f"{'':14}{'ours':>10}{'OpenAI':>10}{'ratio':>8}{'target':>9}{'max |diff|':>12}")
    for tower, unit in (("image", "images/s"), ("text", "texts/s")):
        ours, openai = results["ours", tower], results["openai", tower]
        ratio = ours["per_second"] / openai["per_second"]
        difference = (ours["features"] - openai["features"]).abs().max().item()
        print(
            f"{'encode_' + tower:14}{ours['per_second']:10.2f}{openai['per_second']:10.2f}"
            f"{ratio:8.2f}{'>= ' + str(TARGETS[tower]):>9}{difference:12.1e}  {unit}"
        )
    for tower in ("image", "text"):
        ours, openai = results["ours", tower]["peak_mb"], results["openai", tower]["peak_mb"]
        print(f"{'peak ' + tower:14}{ours:10.1f}{openai:10.1f}{ours / openai:8.2f}{'':21}  MB added by one call")


if __name__ == "__main__":
    main()
