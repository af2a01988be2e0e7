"""The GPU path, measured: one prepared run that prints a table and writes it as JSON.

    python bench/gpu.py --out results/             # one GPU, at most about 8 minutes (see --budget-s)
    bash bench/gpu.sh --out results/               # the same on a machine without our packages (wheels/)
    python bench/gpu.py --device cpu --small --out /tmp/gpu   # tiny shapes, a few seconds: the test's run

What each section measures (bench/README.md says what each row means):

1. The training step, batch 12, LoRA rank 64 on q, k, v, out_proj, cached image features,
   Concadia-like texts (10 to 40 tokens): ours as train.py runs it, then variants that each add one
   speed-up (data on the GPU, fused Adam, one pass padded to a length bucket, torch.compile, CUDA
   graphs), against the authors' stack (Hugging Face CLIPModel + peft, bench/train_step.py);
   fp32 and bf16 autocast; median ms/step and peak GPU memory. The variants are not the training
   defaults: the table says which pay.
2. The IIT-DAS step (rank 128, layer 10, k 256) over the behavioral step.
3. encode_image and encode_text throughput against OpenAI's clip/model.py, fp16 and bf16.
4. Mixed precision against fp32 on the same weights and batch: feature cosine, loss difference,
   and loss curves of the same training steps in fp32, bf16, and fp16 with the gradient scaler.
5. The projected wall time of the paper's 10-epoch runs, from the measured step and evaluation times.
6. The toy world's default run (python train.py --objective behavioral --lora-rank 64), wall time.

Weights are random (nothing can be downloaded on the GPU machine): speed does not depend on them,
and the precision checks compare two runs of the same weights. Every section catches its own
failure, which is recorded under "errors", and the JSON is rewritten after each, so one broken
part costs only its own numbers. Sections that would not finish before --budget-s are skipped and
named in "skipped".
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import speed  # noqa: E402  (bench/speed.py: OpenAI's reference model by file path)
import train_step  # noqa: E402  (bench/train_step.py: the HF + peft step and Concadia-like texts)
from clip_min.train import loop as training  # noqa: E402
from clip_min.train import setup  # noqa: E402
from clip_min.train.config import PAPER_DEFAULTS, TrainConfig  # noqa: E402
from clip_min.train.device import mixed_precision  # noqa: E402
from clip_min.train.evaluation import Split, split_accuracy  # noqa: E402
from clip_min.train.checkpoint import BatchOrder  # noqa: E402
from clip_min.files import atomic_write_text  # noqa: E402
from clip_min.losses import behavioral_loss, score  # noqa: E402
from clip_min.model import CLIP, CLIPConfig  # noqa: E402
from clip_min.rotation import Rotation  # noqa: E402
from clip_min.weights import save_clip  # noqa: E402

# The paper's run (Appendix B; Concadia's split sizes): what the projection multiplies out.
PAPER = dict(train_images=77_534, val_images=9_693, batch=12, epochs=10, eval_every=500)
# Length buckets for the padded one-pass variants: a batch is cut to the smallest bucket that holds
# its longest text, so torch.compile and CUDA graphs see at most four shapes.
BUCKETS = (16, 32, 48, 77)
TARGETS = {  # name: (comparison, bound), read off the table
    "ours vs HF + peft, behavioral step, bf16 (x faster)": (">=", 3.0),
    "IIT-DAS step / behavioral step, bf16": ("<=", 1.3),
    "projected 10-epoch behavioral run (min)": ("<=", 15.0),
    "projected 10-epoch IIT-DAS run (min)": ("<=", 20.0),
    "bf16 text feature cosine to fp32 (min over texts)": (">=", 0.999),
    "bf16 image feature cosine to fp32 (min over images)": (">=", 0.999),
    "bf16 loss curve end vs fp32 (relative)": ("<=", 0.02),
    "fp16 + scaler loss curve end vs fp32 (relative)": ("<=", 0.02),
}


@dataclass(frozen=True)
class Sizes:
    """How big each measurement is: the paper's shapes, or tiny ones for the CPU test (--small)."""

    shape: CLIPConfig  # model shape
    rank: int  # LoRA rank of the behavioral step
    iit_rank: int  # LoRA rank of the IIT-DAS step
    layer: int  # IIT-DAS intervention site (0-based text block)
    k: int  # IIT-DAS intervention size
    pool: int  # training examples the step measurements cycle through (a multiple of the batch)
    warmup: int  # untimed steps before timing (compiled variants: compilation happens here)
    blocks: int  # timed blocks; each is `per_block` steps with one GPU sync at its end
    per_block: int
    curve_steps: int  # steps of each mixed-precision loss curve
    curve_tail: int  # the curves' ends are the means of their last `curve_tail` losses
    image_batch: int  # images per encode_image call
    text_batch: int  # texts per encode_text call
    encode_calls: int  # timed calls per encoder
    val_images: int  # size of the validation split whose evaluation is timed
    compile_backend: str = "inductor"  # torch.compile's backend; the CPU test uses aot_eager, which traces
    # forward and backward as inductor does but skips its C++ code generation (a minute on a small CPU)


FULL = Sizes(CLIPConfig(), rank=PAPER_DEFAULTS[("behavioral", "lora")]["lora_rank"],
             iit_rank=PAPER_DEFAULTS[("iit-das", "lora")]["lora_rank"], layer=PAPER_DEFAULTS["all"]["layer"],
             k=PAPER_DEFAULTS["all"]["intervention_size"], pool=1200, warmup=5, blocks=10, per_block=10,
             curve_steps=200, curve_tail=20, image_batch=256, text_batch=256, encode_calls=10,
             val_images=PAPER["val_images"])
SMALL = Sizes(CLIPConfig(embed_dim=32, image_resolution=32, vision_patch_size=16, vision_width=64, vision_layers=1,
                         vision_heads=1, text_width=64, text_layers=2, text_heads=1),
              rank=4, iit_rank=8, layer=0, k=32, pool=48, warmup=1, blocks=2, per_block=2,
              curve_steps=8, curve_tail=3, image_batch=4, text_batch=24, encode_calls=2, val_images=60,
              compile_backend="aot_eager")


@dataclass(frozen=True)
class Variant:
    """One row of the training-step table: ours, with the speed-ups it names switched on."""

    name: str  # the row's label
    objective: str = "behavioral"  # behavioral (Eq. 1) or iit-das (Eqs. 2-3)
    amp: str = "bf16"  # off (fp32) or bf16 autocast
    loop: bool = False  # train.py's per-step work: batch gathered on the host and copied, loss read back, gradients checked
    fused: bool = False  # Adam(fused=True): one kernel per step instead of one per tensor group
    bucket: bool = False  # padded to a BUCKETS length read off the host, instead of cut to the longest text on the GPU
    compile: str | None = None  # torch.compile mode: "default", or "reduce-overhead" (CUDA graphs)


STEP_ROWS = (
    Variant("ours fp32, as train.py", amp="off", loop=True),
    Variant("ours bf16, as train.py", loop=True),
    Variant("ours bf16, data on GPU, no read-back"),
    Variant("  + fused Adam", fused=True),
    Variant("  + one pass, length buckets", fused=True, bucket=True),
    Variant("  + torch.compile", fused=True, bucket=True, compile="default"),
    Variant("  + CUDA graphs", fused=True, bucket=True, compile="reduce-overhead"),
    Variant("IIT-DAS fp32, as train.py", objective="iit-das", amp="off", loop=True),
    Variant("IIT-DAS bf16, as train.py", objective="iit-das", loop=True),
    Variant("IIT-DAS bf16, data on GPU, fused Adam", objective="iit-das", fused=True),
)
HF_ROWS = {"HF + peft fp32": "off", "HF + peft bf16": "bf16"}
AS_TRAIN = {"behavioral": "ours bf16, as train.py", "iit-das": "IIT-DAS bf16, as train.py"}


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: str) -> None:
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: str) -> float | None:
    """Peak GPU memory allocated since reset_memory, in MiB; None on the CPU (see bench/train_step.py for RSS)."""
    if torch.device(device).type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def time_calls(call, device: str, warmup: int, blocks: int, per_block: int) -> dict:
    """Median and fastest ms per call over `blocks` blocks of `per_block` calls, after `warmup` calls.

    The GPU is synchronised once per block, not per call, so the host may run ahead of the GPU as
    it does in training; the first warmup call's time is returned too (compilation, if any).
    """
    start = time.perf_counter()
    for i in range(warmup):
        call()
        sync(device)
    warm_s = time.perf_counter() - start
    ms = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            call()
        sync(device)
        ms.append((time.perf_counter() - start) * 1000 / per_block)
    return {"ms": statistics.median(ms), "ms_min": min(ms), "warmup_s": warm_s, "timed_calls": blocks * per_block}


class Pool:
    """Synthetic training examples: image features, and a caption and a description of Concadia-like length.

    Descriptions draw their words from the lower half of the vocabulary and captions from the upper
    half, and every image feature shares one direction: the preference is then learnable, so the
    mixed-precision loss curves go somewhere.
    """

    def __init__(self, n: int, embed_dim: int, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        common = torch.nn.functional.normalize(torch.randn(embed_dim, generator=generator), dim=0)
        self.image = torch.nn.functional.normalize(torch.randn(n, embed_dim, generator=generator), dim=-1) + common
        middle = train_step.SOT // 2
        self.descriptions, _ = train_step.concadia_like_tokens(n, generator, 0, ids=(1, middle))  # (n, 77)
        self.captions, _ = train_step.concadia_like_tokens(n, generator, 0, ids=(middle, train_step.SOT))
        self.lengths = torch.maximum(self.descriptions.argmax(-1), self.captions.argmax(-1)) + 1  # (n,) on the host

    def to(self, device: str) -> "Pool":
        moved = object.__new__(Pool)
        moved.image, moved.descriptions, moved.captions = (t.to(device) for t in (self.image, self.descriptions, self.captions))
        moved.lengths = self.lengths
        return moved


def bucket(longest: int) -> int:
    return next(b for b in BUCKETS if b >= longest)


def ours_step(v: Variant, s: Sizes, device: str, pool: Pool):
    """A closure running one training step of variant v; built from the library's own pieces."""
    torch.manual_seed(0)
    model = CLIP(s.shape).to(device)
    rank = s.rank if v.objective == "behavioral" else s.iit_rank
    config = TrainConfig(objective=v.objective, lora_rank=rank, lora_alpha=float(rank), towers="text", layer=s.layer,
                                  intervention_size=s.k, lr=1e-4, amp=v.amp, device=device)
    params = setup.trainable_parameters(model, config)
    rotation = None
    if v.objective == "iit-das":
        rotation = Rotation(s.shape.text_width).to(device)
        params += list(rotation.parameters())
    names = {p: name for name, p in model.named_parameters()}
    # fused=None is torch's default: foreach kernels on CUDA, a loop over tensors on the CPU.
    optimizer = torch.optim.Adam(params, lr=config.lr, fused=True if v.fused else None)
    autocast, _ = mixed_precision(v.amp, device)
    model.train()

    def bucketed_loss(image, descriptions, captions, length: int) -> torch.Tensor:
        """Eq. 1 as training.step_loss computes it, with the texts run in one pass cut to ``length``."""
        with autocast():
            des, cap = model.encode_text(torch.cat([descriptions, captions]), length).float().chunk(2)
            return behavioral_loss(c_cap=score(image, cap, model.logit_scale), c_des=score(image, des, model.logit_scale))

    if v.compile and s.compile_backend == "inductor":
        bucketed_loss = torch.compile(bucketed_loss, mode=v.compile, dynamic=False)
    elif v.compile:  # modes are inductor's
        bucketed_loss = torch.compile(bucketed_loss, backend=s.compile_backend, dynamic=False)

    if v.loop:
        host = pool.to("cpu")
        order = BatchOrder(s.pool, train_step.BATCH, seed=0)
        count = [0]

        def step() -> None:  # the body of training.finetune's loop, one process
            count[0] += 1
            rows = order.next()
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = training.step_loss(model, rotation, config, host.image[rows].to(device),
                                          host.descriptions[rows].to(device), host.captions[rows].to(device))
            loss.backward()
            training.stop_if_not_finite(count[0], loss.item(), params, names, config, None)
            optimizer.step()

        return step

    resident = pool.to(device)
    order_host = torch.randperm(s.pool, generator=torch.Generator().manual_seed(0))
    order_device = order_host.to(device)
    place = [0]

    def step() -> None:
        start = place[0] % s.pool
        place[0] += train_step.BATCH
        rows = order_device[start:start + train_step.BATCH]  # a slice of a GPU tensor: no copy, no sync
        image, descriptions, captions = resident.image[rows], resident.descriptions[rows], resident.captions[rows]
        optimizer.zero_grad(set_to_none=True)
        if v.bucket:
            length = bucket(int(resident.lengths[order_host[start:start + train_step.BATCH]].max()))  # host data
            if v.compile == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer read
            loss = bucketed_loss(image, descriptions, captions, length)
        else:
            with autocast():
                loss = training.step_loss(model, rotation, config, image, descriptions, captions)
        loss.backward()
        optimizer.step()

    return step


def measure_steps(s: Sizes, device: str, rows: list[Variant], results: dict) -> None:
    pool = Pool(s.pool, s.shape.embed_dim)
    for v in rows:
        reset_memory(device)
        step = ours_step(v, s, device, pool)
        results[v.name] = {**time_calls(step, device, s.warmup, s.blocks, s.per_block), "peak_mb": peak_mb(device),
                           **{k: val for k, val in asdict(v).items() if k != "name"}}
        del step
        progress(f"step: {v.name}: {results[v.name]['ms']:.2f} ms")


def measure_hf(s: Sizes, device: str, results: dict) -> None:
    for name, amp in HF_ROWS.items():
        reset_memory(device)
        autocast, _ = mixed_precision(amp, device)
        torch.manual_seed(0)
        step = train_step.hf_peft_step(s.shape, s.rank, device, autocast)
        results[name] = {**time_calls(step, device, s.warmup, s.blocks, s.per_block), "peak_mb": peak_mb(device), "amp": amp}
        del step
        progress(f"step: {name}: {results[name]['ms']:.2f} ms")


def random_pixels(n: int, shape: CLIPConfig, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, shape.image_resolution, shape.image_resolution, generator=generator).to(device)


def measure_encoders(s: Sizes, device: str) -> dict:
    """Items per second of encode_image and encode_text, ours and OpenAI's, under fp16 and bf16 autocast."""
    torch.manual_seed(0)
    ours = CLIP(s.shape).to(device).eval()
    with tempfile.TemporaryDirectory() as temp:
        save_clip(ours, Path(temp) / "weights.pt")
        openai = speed.openai_clip(Path(temp) / "weights.pt", s.shape).to(device)
        openai_half = speed.openai_clip(Path(temp) / "weights.pt", s.shape).to(device)
    speed.openai_clip_module().convert_weights(openai_half)  # fp16 weights, as clip.load gives on CUDA
    generator = torch.Generator().manual_seed(2)
    tokens, _ = train_step.concadia_like_tokens(s.text_batch, generator, 0)
    inputs = {"image": random_pixels(s.image_batch, s.shape, device), "text": tokens.to(device)}
    rows = {}
    with torch.no_grad():
        for dtype in ("fp16", "bf16"):
            autocast, _ = mixed_precision(dtype, device)
            for tower, x in inputs.items():
                for who, model, context in (("ours", ours, autocast), ("OpenAI", openai, autocast),
                                            ("OpenAI fp16 weights", openai_half, nullcontext)):
                    if who == "OpenAI fp16 weights" and dtype != "fp16":
                        continue
                    encode = model.encode_image if tower == "image" else model.encode_text

                    def call():
                        with context():
                            return encode(x)

                    timed = time_calls(call, device, 1, s.encode_calls, 1)
                    rows[f"{tower} {dtype} {who}"] = dict(tower=tower, amp=dtype, model=who, per_second=len(x) * 1000 / timed["ms"],
                                                           batch=len(x), ms=timed["ms"])
            progress(f"encoders: {dtype} done")
    return rows


def learnable_batches(s: Sizes, device: str) -> Pool:
    return Pool(s.curve_steps * train_step.BATCH, s.shape.embed_dim, seed=3).to(device)


def measure_amp(s: Sizes, device: str) -> dict:
    """Mixed precision against fp32: feature cosines, the loss on one batch, and loss curves."""
    torch.manual_seed(0)
    model = CLIP(s.shape).to(device).eval()
    pool = learnable_batches(s, device)
    texts = torch.cat([pool.descriptions[:train_step.BATCH], pool.captions[:train_step.BATCH]])
    pixels = random_pixels(min(s.image_batch, 32), s.shape, device)
    image = pool.image[:train_step.BATCH]
    out = {"feature": {}}
    with torch.no_grad():
        reference = {"text": model.encode_text(texts).float(), "image": model.encode_image(pixels).float()}
        des, cap = reference["text"].chunk(2)
        loss_fp32 = behavioral_loss(c_cap=score(image, cap, model.logit_scale), c_des=score(image, des, model.logit_scale)).item()
        for dtype in ("bf16", "fp16"):
            autocast, _ = mixed_precision(dtype, device)
            with autocast():
                features = {"text": model.encode_text(texts).float(), "image": model.encode_image(pixels).float()}
            des, cap = features["text"].chunk(2)
            loss = behavioral_loss(c_cap=score(image, cap, model.logit_scale), c_des=score(image, des, model.logit_scale)).item()
            cosine = {t: torch.nn.functional.cosine_similarity(features[t], reference[t], dim=-1) for t in features}
            out["feature"][dtype] = dict(text_cosine_min=cosine["text"].min().item(),
                                         image_cosine_min=cosine["image"].min().item(),
                                         loss=loss, loss_fp32=loss_fp32, loss_difference=abs(loss - loss_fp32))
    del model
    out["curves"] = {amp: loss_curve(s, device, pool, amp) for amp in ("off", "bf16", "fp16")}
    tail = {amp: statistics.fmean(c["loss"][-s.curve_tail:]) for amp, c in out["curves"].items()}
    out["curve_end"] = {amp: dict(end=tail[amp], relative_to_fp32=abs(tail[amp] - tail["off"]) / tail["off"]) for amp in tail}
    progress("amp: done")
    return out


def loss_curve(s: Sizes, device: str, pool: Pool, amp: str) -> dict:
    """Losses of `curve_steps` behavioral LoRA steps from the same weights on the same batches."""
    torch.manual_seed(0)
    model = CLIP(s.shape).to(device)
    config = TrainConfig(objective="behavioral", lora_rank=s.rank, lora_alpha=float(s.rank), towers="text", lr=1e-4, amp=amp)
    params = setup.trainable_parameters(model, config)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    autocast, scaler = mixed_precision(amp, device)
    model.train()
    losses, skipped = [], 0
    for i in range(s.curve_steps):
        rows = slice(i * train_step.BATCH, (i + 1) * train_step.BATCH)
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = training.step_loss(model, None, config, pool.image[rows], pool.descriptions[rows], pool.captions[rows])
        losses.append(loss.detach().float())  # read back once, at the end
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scale = scaler.get_scale()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            skipped += int(scaler.get_scale() < scale)
    return {"loss": torch.stack(losses).tolist(), "skipped_steps": skipped}


def measure_evaluation(s: Sizes, device: str) -> dict:
    """Seconds of one validation evaluation (split_accuracy) on `val_images` images, bf16."""
    torch.manual_seed(0)
    model = CLIP(s.shape).to(device).eval()
    config = TrainConfig(lora_rank=s.rank, lora_alpha=float(s.rank), towers="text")
    setup.trainable_parameters(model, config)  # the adapters, as in a LoRA run
    pool = Pool(s.val_images, s.shape.embed_dim, seed=4)
    # split_scores reads only the number of examples, the image features and the token ids.
    split = Split([None] * s.val_images, pool.image, pool.descriptions, pool.captions)
    autocast, _ = mixed_precision("bf16", device)
    split_accuracy(model, replace_rows(split, 512), device, autocast)  # warm-up
    sync(device)
    start = time.perf_counter()
    split_accuracy(model, split, device, autocast)
    sync(device)
    seconds = time.perf_counter() - start
    progress(f"evaluation: {seconds:.2f} s for {s.val_images} images")
    return {"seconds": seconds, "images": s.val_images, "seconds_per_image": seconds / s.val_images}


def replace_rows(split: Split, n: int) -> Split:
    return Split(split.examples[:n], split.image_features[:n], split.descriptions[:n], split.captions[:n])


def project(step_ms: float, eval_s_per_image: float) -> dict:
    """Minutes of the paper's 10-epoch run: its optimizer steps plus its evaluations."""
    steps = math.ceil(PAPER["train_images"] / PAPER["batch"]) * PAPER["epochs"]
    # finetune evaluates at step 0, every eval_every steps and at the last step; the test split
    # (about the validation split's size) is scored before and after.
    evaluations = 1 + steps // PAPER["eval_every"] + (steps % PAPER["eval_every"] != 0) + 2
    eval_s = evaluations * eval_s_per_image * PAPER["val_images"]
    train_s = steps * step_ms / 1000
    return {"steps": steps, "evaluations": evaluations, "train_min": train_s / 60, "eval_min": eval_s / 60,
            "total_min": (train_s + eval_s) / 60, "step_ms": step_ms}


def run_toy(device: str, small: bool, timeout_s: float) -> dict:
    """Wall time of the README's first command in a subprocess, as a user runs it."""
    with tempfile.TemporaryDirectory() as temp:
        command = [sys.executable, "train.py", "--objective", "behavioral", "--lora-rank", "64", "--out", str(Path(temp) / "toy"),
                   "--device", device]
        if small:
            command += ["--max-steps", "2"]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
        wall = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"train.py exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        summary = json.loads((Path(temp) / "toy" / "summary.json").read_text())
    progress(f"toy run: {wall:.1f} s")
    return {"command": " ".join(command[1:]), "wall_s": wall, "built_base": "unpacking the toy base" in done.stdout,
            "steps": summary["steps"], "step_time_s": summary["step_time_s"], "accuracy_before": summary["concadia_accuracy_before"],
            "accuracy_after": summary["concadia_accuracy"]}


START = time.perf_counter()
OVERRUN_S = 40  # a section still running this long after --budget-s is stopped (compilation can take minutes)


class OutOfTime(Exception):
    pass


def out_of_time(signum, frame):
    raise OutOfTime(f"stopped {OVERRUN_S} s past --budget-s")


def progress(line: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f} s] {line}", flush=True)


def ratios(result: dict) -> dict:
    """Every ratio and target, computed from the measured numbers above it in the JSON."""
    step = result.get("train_step", {})
    ms = {name: row["ms"] for name, row in step.items()}
    out = {}
    if "HF + peft bf16" in ms and AS_TRAIN["behavioral"] in ms:
        out["hf_bf16_over_ours_bf16"] = ms["HF + peft bf16"] / ms[AS_TRAIN["behavioral"]]
        best = min((n for n in ms if step[n].get("objective") == "behavioral" and step[n].get("amp") == "bf16"), key=ms.get)
        out["best_behavioral_bf16"] = best
        out["hf_bf16_over_best_bf16"] = ms["HF + peft bf16"] / ms[best]
    if "HF + peft fp32" in ms and "ours fp32, as train.py" in ms:
        out["hf_fp32_over_ours_fp32"] = ms["HF + peft fp32"] / ms["ours fp32, as train.py"]
    if AS_TRAIN["iit-das"] in ms and AS_TRAIN["behavioral"] in ms:
        out["iit_over_behavioral_bf16"] = ms[AS_TRAIN["iit-das"]] / ms[AS_TRAIN["behavioral"]]
    if "IIT-DAS fp32, as train.py" in ms and "ours fp32, as train.py" in ms:
        out["iit_over_behavioral_fp32"] = ms["IIT-DAS fp32, as train.py"] / ms["ours fp32, as train.py"]
    encode = result.get("encode", {})
    for key, row in encode.items():
        if row["model"] == "ours":
            for who in ("OpenAI", "OpenAI fp16 weights"):
                other = encode.get(f"{row['tower']} {row['amp']} {who}")
                if other:
                    out[f"encode_{row['tower']}_{row['amp']}_ours_over_{who.replace(' ', '_')}"] = row["per_second"] / other["per_second"]
    return out


def targets(result: dict) -> list[dict]:
    r, amp, projection = result.get("ratios", {}), result.get("amp", {}), result.get("projection", {})
    measured = {
        "ours vs HF + peft, behavioral step, bf16 (x faster)": r.get("hf_bf16_over_ours_bf16"),
        "IIT-DAS step / behavioral step, bf16": r.get("iit_over_behavioral_bf16"),
        "projected 10-epoch behavioral run (min)": projection.get("behavioral", {}).get("total_min"),
        "projected 10-epoch IIT-DAS run (min)": projection.get("iit-das", {}).get("total_min"),
        "bf16 text feature cosine to fp32 (min over texts)": amp.get("feature", {}).get("bf16", {}).get("text_cosine_min"),
        "bf16 image feature cosine to fp32 (min over images)": amp.get("feature", {}).get("bf16", {}).get("image_cosine_min"),
        "bf16 loss curve end vs fp32 (relative)": amp.get("curve_end", {}).get("bf16", {}).get("relative_to_fp32"),
        "fp16 + scaler loss curve end vs fp32 (relative)": amp.get("curve_end", {}).get("fp16", {}).get("relative_to_fp32"),
    }
    rows = []
    for name, (op, bound) in TARGETS.items():
        value = measured[name]
        met = None if value is None else (value >= bound if op == ">=" else value <= bound)
        rows.append(dict(name=name, measured=value, target=f"{op} {bound:g}", met=met))
    return rows


def table(result: dict) -> str:
    """The printed table: every number comes from `result`."""
    lines = [f"clip_min on {result['meta']['device_name']}, torch {result['meta']['torch']}, {result['meta']['date']}"
             f"{' (--small: tiny shapes, not the paper' + chr(39) + 's)' if result['meta']['small'] else ''}"]
    step = result.get("train_step", {})
    if step:
        lines += ["", "training step, batch 12, cached image features, Concadia-like texts "
                  f"(median of {next(iter(step.values()))['timed_calls']} steps)",
                  f"{'row':<42}{'ms/step':>9}{'(min)':>8}{'peak MB':>9}{'warm-up s':>10}"]
        for name, row in step.items():
            peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}"
            lines.append(f"{name:<42}{row['ms']:>9.2f}{row['ms_min']:>8.2f}{peak:>9}{row['warmup_s']:>10.1f}")
    r = result.get("ratios", {})
    if "best_behavioral_bf16" in r:
        lines.append(f"HF + peft bf16 / best bf16 row ({r['best_behavioral_bf16'].strip()}): {r['hf_bf16_over_best_bf16']:.2f}x")
    encode = result.get("encode", {})
    if encode:
        lines += ["", f"{'encoder throughput (items/s)':<42}{'ours':>10}{'OpenAI':>10}{'ratio':>8}"]
        for key, row in encode.items():
            if row["model"] != "ours":
                continue
            for who in ("OpenAI", "OpenAI fp16 weights"):
                other = encode.get(f"{row['tower']} {row['amp']} {who}")
                if other:
                    label = f"encode_{row['tower']} {row['amp']} autocast" + (" vs fp16 weights" if "weights" in who else "")
                    lines.append(f"{label:<42}{row['per_second']:>10.0f}{other['per_second']:>10.0f}"
                                 f"{row['per_second'] / other['per_second']:>8.2f}")
    amp = result.get("amp")
    if amp:
        lines += ["", "mixed precision vs fp32, same weights and batch"]
        for dtype, row in amp["feature"].items():
            lines.append(f"  {dtype}: min cosine text {row['text_cosine_min']:.6f}, image {row['image_cosine_min']:.6f}; "
                         f"loss {row['loss']:.5f} vs {row['loss_fp32']:.5f} (diff {row['loss_difference']:.1e})")
        curves = amp["curves"]
        n = len(curves["off"]["loss"])
        lines.append(f"  loss curves, {n} steps (fp32 / bf16 / fp16 + scaler):")
        for i in sorted({0, n // 4, n // 2, 3 * n // 4, n - 1}):
            lines.append(f"    step {i + 1:>4}: " + " / ".join(f"{curves[a]['loss'][i]:.4f}" for a in ("off", "bf16", "fp16")))
        ends = amp["curve_end"]
        lines.append(f"  end (mean of last {result['sizes']['curve_tail']}): " + " / ".join(f"{ends[a]['end']:.4f}" for a in ("off", "bf16", "fp16"))
                     + f"; fp16 skipped {curves['fp16']['skipped_steps']} steps")
    evaluation = result.get("evaluation")
    if evaluation:
        lines += ["", f"validation evaluation: {evaluation['seconds']:.2f} s for {evaluation['images']} images (bf16)"]
    for objective, p in result.get("projection", {}).items():
        lines.append(f"projected 10-epoch {objective} run: {p['total_min']:.1f} min = {p['steps']} steps x {p['step_ms']:.2f} ms "
                     f"({p['train_min']:.1f} min) + {p['evaluations']} evaluations ({p['eval_min']:.1f} min)")
    toy = result.get("toy", {})
    for key, run in toy.items():
        lines.append(f"toy world, {key}: {run['wall_s']:.1f} s ({run['steps']} steps, base built: {run['built_base']}, "
                     f"accuracy {run['accuracy_before']:.3f} -> {run['accuracy_after']:.3f})")
    lines += ["", f"{'target':<54}{'measured':>10}  {'wanted':<9}met"]
    for row in result.get("targets", []):
        value = "-" if row["measured"] is None else f"{row['measured']:.4g}"
        lines.append(f"{row['name']:<54}{value:>10}  {row['target']:<9}{'-' if row['met'] is None else 'yes' if row['met'] else 'NO'}")
    for section, error in result.get("errors", {}).items():
        # the exception's own line: the last one that names an exception type (torch adds hints after it)
        named = [line for line in error.strip().splitlines() if re.match(r"[\w.]+(Error|Exception|OutOfTime)\b", line)]
        lines.append(f"ERROR in {section}: {(named or error.strip().splitlines())[-1]}")
    for section in result.get("skipped", []):
        lines.append(f"skipped (out of time): {section}")
    return "\n".join(lines)


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu.json and gpu.txt")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, or cpu")
    parser.add_argument("--small", action="store_true", help="tiny shapes and few steps: a few seconds on a CPU")
    parser.add_argument("--budget-s", type=float, default=420,
                        help=f"seconds: later sections are skipped, and one still running {OVERRUN_S} s past it is stopped")
    parser.add_argument("--no-toy", action="store_true", help="leave out the toy world's run")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {args.device}: this torch sees no CUDA device; use --device cpu (with --small for the quick check)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    s = SMALL if args.small else FULL
    device = args.device
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are fp32, as in train.py
    if torch.device(device).type == "cpu":
        torch.set_num_threads(train_step.THREADS)  # see bench/train_step.py: threads spin on a shared machine

    result = {
        "meta": dict(device=device, device_name=device_name(device), torch=torch.__version__, python=platform.python_version(),
                     date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), small=args.small,
                     budget_s=args.budget_s),
        "sizes": {**asdict(s), "shape": asdict(s.shape)},
        "paper": PAPER, "train_step": {}, "errors": {}, "skipped": [],
    }

    def save() -> None:
        result["ratios"] = ratios(result)
        result["targets"] = targets(result)
        atomic_write_text(out / "gpu.json", json.dumps(result, indent=2) + "\n")

    deadline = START + args.budget_s
    # (section, seconds it must have left to start on the full run, what it does); the cheap,
    # must-have sections first, compilation last: its time is the hardest to foresee.
    eager = [v for v in STEP_ROWS if not v.compile]
    sections = [
        ("steps, eager", 0, lambda: measure_steps(s, device, eager, result["train_step"])),
        ("steps, HF + peft", 0, lambda: measure_hf(s, device, result["train_step"])),
        ("amp", 30, lambda: result.__setitem__("amp", measure_amp(s, device))),
        ("encoders", 30, lambda: result.__setitem__("encode", measure_encoders(s, device))),
        ("evaluation", 15, lambda: result.__setitem__("evaluation", measure_evaluation(s, device))),
    ]
    if not args.no_toy:
        sections.append(("toy run", 120, lambda: result.setdefault("toy", {}).__setitem__(
            "first run" if not args.small else "2 steps", run_toy(device, args.small, max(10, deadline - time.perf_counter())))))
    for v in STEP_ROWS:
        if v.compile:
            sections.append((f"steps, {v.name.strip(' +')}", 120, lambda v=v: measure_steps(s, device, [v], result["train_step"])))
    for name, needs_s, run in sections:
        if not args.small and deadline - time.perf_counter() < needs_s:
            result["skipped"].append(name)
            progress(f"skipped {name}: {deadline - time.perf_counter():.0f} s left")
            continue
        signal.signal(signal.SIGALRM, out_of_time)
        signal.alarm(max(1, math.ceil(deadline + OVERRUN_S - time.perf_counter())))
        try:
            run()
        except Exception:  # one section's failure must not cost the others' numbers
            result["errors"][name] = traceback.format_exc()
            progress(f"ERROR in {name}:\n{result['errors'][name]}")
        finally:
            signal.alarm(0)
        if "evaluation" in result and "train_step" in result:
            result["projection"] = {objective: project(result["train_step"][row]["ms"], result["evaluation"]["seconds_per_image"])
                                    for objective, row in AS_TRAIN.items() if row in result["train_step"]}
        save()
    # Rows in the order of STEP_ROWS, HF's after the behavioral ones, whatever order they ran in.
    order = [v.name for v in STEP_ROWS if v.objective == "behavioral"] + list(HF_ROWS) + [v.name for v in STEP_ROWS if v.objective != "behavioral"]
    result["train_step"] = {name: result["train_step"][name] for name in order if name in result["train_step"]}
    save()
    text = table(result)
    atomic_write_text(out / "gpu.txt", text + "\n")
    print(text)
    print(f"wrote {out / 'gpu.json'} and {out / 'gpu.txt'} in {time.perf_counter() - START:.0f} s")


if __name__ == "__main__":
    main()
