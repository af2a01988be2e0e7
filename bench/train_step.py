"""Seconds and memory per LoRA training step: clip_min against the authors' HF + peft stack.

    python bench/train_step.py          # from the repo root; about 2.5 minutes on one CPU core

All three steps use ViT-B/32 shapes with random weights, a batch of 12 images with one caption
and one description each, Concadia-like text lengths (10 to 40 tokens, start and end
included), precomputed random image features (the image tower never runs, as in the authors'
code), LoRA rank 64 on q, k, v and out_proj, and Adam:

- ours, behavioral: clip_min's training step for Eq. 1 (``loop.step_loss``) as train.py runs it on
  a CPU: the 24 texts in two halves sorted by length, each cut to its longest text
  (``clip_min.sorted_parts``).
- HF + peft, behavioral: transformers.CLIPModel + peft, Eq. 1, texts padded to 77 with an
  attention mask, as the authors' code does.
- ours, IIT-DAS: the same step for Eqs. 2 and 3: interchange_features at layer 10, k = 256, on
  the 12 rows of a caption and a description in four parts sorted by length; the rotation trains
  along with LoRA.

Peak memory is measured in one subprocess per setup: torch's CPU allocations are invisible to
tracemalloc, and ru_maxrss is a high-water mark that never comes down, so two setups in one
process would hide the smaller one. Time is measured in this process with the setups taking
turns step by step (see seconds_per_step).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from clip_min.train.config import PAPER_DEFAULTS  # noqa: E402

BATCH = 12  # images per step (Appendix B), so 12 captions and 12 descriptions
# LoRA rank of the behavioral runs (Appendix B); kept for IIT-DAS too so only the objective differs.
RANK = PAPER_DEFAULTS[("behavioral", "lora")]["lora_rank"]
LAYER, SIZE = PAPER_DEFAULTS["all"]["layer"], PAPER_DEFAULTS["all"]["intervention_size"]  # DAS site and k (Appendix B)
WARMUP, STEPS = 2, 10  # untimed steps, then timed steps (the median is reported)
# One thread per process by default: on a machine shared with other jobs, OpenMP threads spin
# at every barrier while a sibling waits for a core, which made two-thread steps 5-10x slower
# and erratic. On an idle machine, --threads 2 is faster.
THREADS = 1
SOT, EOT, CONTEXT, WIDTH = 49406, 49407, 77, 512
MEASUREMENTS = ("ours-behavioral", "hf-peft-behavioral", "ours-iit-das")


def concadia_like_tokens(n: int, generator: torch.Generator, pad: int,
                         ids: tuple[int, int] = (1, SOT)) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 77) ids of random texts of 10..40 tokens (start and end included) and their attention mask.

    The words between start and end are drawn from ``ids`` (low inclusive, high exclusive).
    """
    lengths = torch.randint(10, 41, (n,), generator=generator)
    tokens = torch.full((n, CONTEXT), pad, dtype=torch.long)
    mask = torch.zeros(n, CONTEXT, dtype=torch.long)
    for i, length in enumerate(lengths.tolist()):
        body = torch.randint(*ids, (length - 2,), generator=generator)
        tokens[i, :length] = torch.cat([torch.tensor([SOT]), body, torch.tensor([EOT])])
        mask[i, :length] = 1
    return tokens, mask


def batch(pad: int, width: int = WIDTH, device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """The same image features, captions and descriptions (and their masks) for every measurement."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(BATCH, width, generator=generator)  # (12, 512) precomputed image features
    captions, caption_mask = concadia_like_tokens(BATCH, generator, pad)
    descriptions, description_mask = concadia_like_tokens(BATCH, generator, pad)
    return tuple(t.to(device) for t in (image, captions, descriptions, caption_mask, description_mask))


def ours_step(iit: bool):
    from clip_min.lora import apply_lora
    from clip_min.model import CLIP, CLIPConfig
    from clip_min.rotation import Rotation
    from clip_min.train.config import TrainConfig
    from clip_min.train.loop import step_loss

    model = CLIP(CLIPConfig())
    apply_lora(model, RANK, targets="attn", towers="text")
    params = [p for p in model.parameters() if p.requires_grad]
    rotation = None
    if iit:
        rotation = Rotation(WIDTH)
        params += list(rotation.parameters())
    config = TrainConfig(objective="iit-das" if iit else "behavioral", layer=LAYER, intervention_size=SIZE)
    optimizer = torch.optim.Adam(params, lr=1e-4)
    image, captions, descriptions, _, _ = batch(pad=0)  # OpenAI's tokenizer pads with 0

    def step() -> None:
        loss = step_loss(model, rotation, config, image, descriptions, captions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def passes(iit: bool) -> str:
    """Texts x tokens of each pass one of our steps runs through the text tower, as train.py cuts the batch."""
    from clip_min.model import CLIP

    shapes, embed = [], CLIP.embed_text

    def recording(self, tokens, length=None):
        x, eot = embed(self, tokens, length)  # (texts, tokens, width)
        shapes.append(f"{x.shape[0]} x {x.shape[1]}")
        return x, eot

    CLIP.embed_text = recording
    try:
        build("ours-iit-das" if iit else "ours-behavioral")()
    finally:
        CLIP.embed_text = embed
    return " + ".join(shapes)


def hf_peft_step(shape=None, rank: int = RANK, device: str = "cpu", autocast=nullcontext):
    """The authors' stack: one step of Eq. 1 on HF's CLIPModel with peft's LoRA (ViT-B/32 unless ``shape``).

    ``shape`` is a clip_min CLIPConfig; ``autocast`` a context factory (bench/gpu.py passes bf16's).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import CLIPConfig, CLIPModel

    from clip_min.losses import behavioral_loss, score
    from clip_min.model import CLIPConfig as Shape

    shape = shape or Shape()
    config = CLIPConfig(
        text_config=dict(hidden_size=shape.text_width, intermediate_size=4 * shape.text_width,
                         num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads,
                         max_position_embeddings=shape.context_length, vocab_size=shape.vocab_size, eos_token_id=EOT),
        vision_config=dict(hidden_size=shape.vision_width, intermediate_size=4 * shape.vision_width,
                           num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                           image_size=shape.image_resolution, patch_size=shape.vision_patch_size),
        projection_dim=shape.embed_dim,
    )
    # peft 0.21 calls a transformers method deprecated in 5.x; the warning is theirs, not the bench's.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # These module names also match the vision tower; its adapters get no gradient (the image
    # tower never runs), so Adam skips them.
    lora = LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], lora_dropout=0.0)
    model = get_peft_model(CLIPModel(config), lora).to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    # HF's CLIP tokenizer pads to 77 with <|endoftext|> and returns an attention mask.
    image, captions, descriptions, caption_mask, description_mask = batch(EOT, shape.embed_dim, device)
    ids, mask = torch.cat([captions, descriptions]), torch.cat([caption_mask, description_mask])
    logit_scale = model.base_model.model.logit_scale

    def step() -> None:
        with autocast():
            text = model.get_text_features(input_ids=ids, attention_mask=mask)
            # transformers 5 returns an output object here; some releases, the tensor itself.
            text = text if isinstance(text, torch.Tensor) else text.pooler_output  # (24, 512)
            c_cap, c_des = score(image.repeat(2, 1), text.float(), logit_scale).chunk(2)
            loss = behavioral_loss(c_cap=c_cap, c_des=c_des)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def build(name: str):
    torch.manual_seed(0)
    return hf_peft_step() if name == "hf-peft-behavioral" else ours_step(iit=name == "ours-iit-das")


def peak_memory(name: str, threads: int) -> dict:
    """Peak RSS of one setup over two steps, in MB; meant to run alone in a fresh process.

    The first step allocates the gradients and Adam's state, the second shows the steady state.
    """
    torch.set_num_threads(threads)
    step = build(name)
    setup_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(2):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_mb": peak / 1024, "train_mb": (peak - setup_peak) / 1024}


def seconds_per_step(threads: int) -> dict[str, list[float]]:
    """Seconds of each timed step of each setup, their steps interleaved in one process.

    Other jobs on the machine come and go; taking turns step by step exposes all three setups to
    the same load, which keeps the ratios honest even when the absolute times wander.
    """
    torch.set_num_threads(threads)
    steps = {name: build(name) for name in MEASUREMENTS}
    times = {name: [] for name in MEASUREMENTS}
    for i in range(WARMUP + STEPS):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= WARMUP:
                times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=THREADS, help="torch threads per process")
    parser.add_argument("--memory", choices=MEASUREMENTS, help="internal: measure one setup's peak memory, print JSON")
    args = parser.parse_args()
    if args.memory:
        print(json.dumps(peak_memory(args.memory, args.threads)))
        return

    # Memory runs are independent processes and their peaks do not depend on speed, so they run
    # side by side; the timing below starts only after they have all finished.
    command = [sys.executable, __file__, "--threads", str(args.threads), "--memory"]
    runs = {
        name: subprocess.Popen(command + [name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for name in MEASUREMENTS
    }
    memory = {}
    for name, run in runs.items():
        out, err = run.communicate()
        if run.returncode:
            sys.exit(f"{name} failed:\n{err}")
        memory[name] = json.loads(out.strip().splitlines()[-1])
    times = seconds_per_step(args.threads)
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"torch {torch.__version__}, {args.threads} thread(s); {BATCH} images x (caption + description); "
          f"LoRA rank {RANK} on q, k, v, out_proj; texts x tokens per pass: ours behavioral {passes(iit=False)}, "
          f"IIT-DAS {passes(iit=True)} (length-sorted parts), HF {2 * BATCH} x {CONTEXT}")
    print(f"s/step: median (and fastest) of {STEPS} steps after {WARMUP} warmups, the three setups taking turns")
    print("peak MB: max RSS of a process running that setup alone; train MB: its rise during the two steps")
    print(f"{'setup':<22}{'s/step':>9}{'(min)':>9}{'peak MB':>10}{'train MB':>10}")
    for name in MEASUREMENTS:
        print(f"{name:<22}{median[name]:>9.3f}{min(times[name]):>9.3f}"
              f"{memory[name]['peak_mb']:>10.0f}{memory[name]['train_mb']:>10.0f}")
    ours, hf, iit = (median[name] for name in MEASUREMENTS)
    print(f"behavioral step: ours is {hf / ours:.2f}x faster than HF + peft (target >= 3)")
    print(f"ours, IIT-DAS step / behavioral step: {iit / ours:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
