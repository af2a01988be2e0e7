"""Fine-tuning CLIP to prefer descriptions (Eq. 1), with IIT-DAS (Eq. 2-4) or both (Eq. 5).

Only the text tower is trained by default, as in the authors' code: every image's features are
computed once (``clip_min.train.features``) and each step runs the text tower on the batch's captions
and descriptions. ``run`` is what ``train.py`` calls; it writes into the run folder:

    config.json     the resolved TrainConfig (what eval.py needs to rebuild the model)
    metrics.jsonl   one line per evaluation: validation and test preference accuracy, transfer F1
    selected.pt     the trained tensors at the step Appendix C selects (``clip_min.train.selected``)
    adapters.pt     LoRA tensors and the rotation (LoRA runs, and any run with a rotation)
    weights.pt      the whole model in OpenAI's format (full fine-tuning and --objective clip)
    checkpoint.pt   everything needed to resume the run exactly (``clip_min.train.checkpoint``)
    summary.json    the numbers of the run, before and after

Under ``torchrun`` several processes share each batch (``clip_min.train.distributed``); the main one
evaluates and writes the folder.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint, distributed, selected
from ..data.concadia import DataError, Example, read_concadia
from .features import encode_images, encode_now
from ..files import atomic_save, atomic_write_text, content_fingerprint
from ..intervention import interchange_features
from ..lora import apply_lora, lora_state_dict
from ..losses import behavioral_loss, iit_loss, joint_loss, score
from ..metrics import preference_accuracy, transfer_score
from ..model import CLIP
from ..images import load_image, preprocess
from ..rotation import Rotation
from .selected import SELECTION_A, selection_score
from ..tokenizer import get_tokenizer
from ..data.transfer import PROMPTS, TransferTask, class_text_features, encode_task, read_task, zero_shot_f1
from ..weights import check_vocabulary, load_clip, save_clip

OBJECTIVES = ("clip", "behavioral", "iit-das", "joint")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means: the default for this objective and setting (see defaults())."""

    objective: str = "behavioral"  # clip (contrastive pretraining), behavioral (Eq. 1), iit-das (Eq. 2-3), joint (Eq. 5)
    finetune: str = "lora"  # lora: train low-rank adapters only; full: train every text-tower weight
    lora_rank: int | None = None  # r; paper: 64 behavioral, 128 IIT-DAS
    lora_alpha: float | None = None  # scaling = alpha / r; the authors set alpha = r
    lora_dropout: float = 0.0  # dropout on the adapter's input
    lora_targets: str = "attn"  # qv, attn (q, k, v, out) or all-linear (attention and MLP)
    towers: str = "text"  # text: vision tower frozen and its features cached; both: train both towers
    layer: int | None = None  # text block whose output the intervention edits; paper: 10 of 12
    intervention_size: int | None = None  # k, rotated coordinates swapped; paper: 256 of 512
    joint_alpha: float = 0.5  # a in Eq. 5: weight of the IIT loss
    lr: float | None = None  # Adam learning rate
    rotation_lr: float | None = None  # the DAS rotation's learning rate (IIT-DAS, joint); None: the same as lr
    l2: float = 0.0  # L2 penalty (Adam weight_decay); paper: 0
    epochs: int | None = None  # passes over the training split (IIT-DAS, joint: of iit_samples triplets); paper: 10
    iit_samples: int | None = None  # IIT-DAS, joint: (image, caption, description) triplets per epoch; paper: 100,000; None: the training split
    max_steps: int | None = None  # stop after this many optimizer steps, whatever the epochs
    batch_size: int = 12  # images per step, each with its caption and description
    seed: int = 0  # seeds data order, initialisation of adapters and rotation
    amp: str = "auto"  # auto: bf16 (or fp16) on CUDA, off on CPU; bf16; fp16; off
    device: str = "auto"  # auto: cuda if available, else cpu
    weights: str | None = None  # OpenAI or Hugging Face CLIP weights; None: the toy world's base
    data: str | None = None  # Concadia folder; None: the toy world
    images: str | None = None  # Concadia's image folder if not DATA/resized
    transfer: tuple[str, ...] = ()  # transfer task folders (Food-101, CIFAR-100 or ImageNet layout); default: the toy tasks
    prompt: str = "paper"  # zero-shot prompt template: paper, photo or picture (see transfer.PROMPTS)
    out: str = "runs/latest"  # run folder
    eval_every: int | None = None  # evaluate every N steps (and at the start and end)
    checkpoint_every: int | None = None  # write checkpoint.pt every N steps and at the end; None: every eval_every
    resume: str | None = None  # go on with the run in this folder from its checkpoint.pt (see checkpoint.MAY_CHANGE)
    trade_off_a: float = SELECTION_A  # a in Appendix C's a * accuracy + (1 - a) * transfer score, which selects the step

    @property
    def toy(self) -> bool:
        return self.weights is None and self.data is None


# The paper's Appendix B. Its LoRA search starts from "the best configuration for full-finetuning"
# and varies only rank, dropout and targets, so LoRA keeps the full fine-tuning learning rates.
PAPER_DEFAULTS = {
    ("behavioral", "full"): dict(lr=5e-7, lora_rank=64),
    ("behavioral", "lora"): dict(lr=5e-7, lora_rank=64),
    ("iit-das", "full"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("iit-das", "lora"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("joint", "full"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("joint", "lora"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("clip", "full"): dict(lr=1e-5, lora_rank=64),
    ("clip", "lora"): dict(lr=1e-4, lora_rank=64),
}
# The toy world: one epoch, at rates picked by hand while building it, low enough that zero-shot colour
# naming survives; the intervention sits at the toy text tower's second-to-last block with half
# its width, as 10 of 12 and 256 of 512 do in the paper. An IIT-DAS epoch is one pass over the
# toy training split (2,368 triplets): 100,000 would be 42 passes, far past where the toy converges.
TOY_DEFAULTS = {
    ("behavioral", "full"): dict(lr=3e-5, epochs=1),
    ("behavioral", "lora"): dict(lr=3e-4, epochs=1),
    ("iit-das", "full"): dict(lr=3e-5, epochs=1),
    ("iit-das", "lora"): dict(lr=1e-4, epochs=1),
    ("joint", "full"): dict(lr=3e-5, epochs=1),
    ("joint", "lora"): dict(lr=1e-4, epochs=1),
    ("clip", "full"): dict(lr=2e-3, epochs=24),
    ("clip", "lora"): dict(lr=1e-3, epochs=24),
}


def defaults(config: TrainConfig, text_layers: int, text_width: int) -> TrainConfig:
    """Fill the ``None`` fields of ``config`` with the paper's (or the toy world's) settings."""
    key = (config.objective, config.finetune)
    chosen = dict(PAPER_DEFAULTS[key])
    chosen.update(layer=10, intervention_size=256, epochs=10, eval_every=500)
    if config.toy:
        chosen.update(layer=text_layers - 2, intervention_size=text_width // 2, eval_every=50)
        chosen.update(TOY_DEFAULTS[key])
        chosen.pop("iit_samples", None)
    filled = {name: value for name, value in chosen.items() if getattr(config, name) is None}
    config = replace(config, **filled)
    if config.lora_alpha is None:
        config = replace(config, lora_alpha=float(config.lora_rank))
    if config.rotation_lr is None and config.objective in ("iit-das", "joint"):
        config = replace(config, rotation_lr=config.lr)
    return config


def check_against_model(config: TrainConfig, model: CLIP) -> None:
    """Refuse settings the loaded model cannot take: a rank above a layer's width, a block it lacks."""
    widths = [model.config.text_width] + ([model.config.vision_width] if config.towers == "both" else [])
    if config.finetune == "lora" and config.lora_rank > min(widths):
        raise ValueError(f"--lora-rank {config.lora_rank} is more than the adapted layers' width {min(widths)}; "
                         f"a rank above it adds nothing, use at most {min(widths)}")
    if config.objective in ("iit-das", "joint"):
        if not 0 <= config.layer < model.config.text_layers:
            raise ValueError(f"--layer {config.layer}: the text tower has blocks 0 to {model.config.text_layers - 1}")
        if config.intervention_size > model.config.text_width:
            raise ValueError(f"--intervention-size {config.intervention_size} is more than the text width "
                             f"{model.config.text_width}")


def check(config: TrainConfig) -> None:
    """Refuse settings that cannot run, naming the setting and what it may be."""
    choices = dict(objective=OBJECTIVES, finetune=("lora", "full"), lora_targets=("qv", "attn", "all-linear"),
                   towers=("text", "both"), amp=("auto", "bf16", "fp16", "off"), prompt=tuple(PROMPTS))
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)!r}: use one of {', '.join(allowed)}")
    for name in ("lora_rank", "batch_size", "epochs", "max_steps", "eval_every", "checkpoint_every", "intervention_size",
                 "iit_samples"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("lr", "rotation_lr"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if config.objective not in ("iit-das", "joint"):
        for name in ("rotation_lr", "iit_samples"):
            if getattr(config, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} applies to --objective iit-das and joint only")
    if not 0 <= config.trade_off_a <= 1:
        raise ValueError(f"--trade-off-a must be in [0, 1] (Appendix C uses 0.9), got {config.trade_off_a}")
    if config.l2 < 0:
        raise ValueError(f"--l2 must be 0 or more, got {config.l2}")
    if not 0 <= config.joint_alpha <= 1:
        raise ValueError(f"--joint-alpha must be in [0, 1], got {config.joint_alpha}")
    if config.data is not None and config.weights is None:
        raise ValueError("--data needs --weights: the toy base knows only the toy world; give both, or neither for the toy world")
    for name in ("weights", "data", "images"):
        value = getattr(config, name)
        if value is not None and not Path(value).exists():
            raise FileNotFoundError(f"--{name} {value}: no such file or folder")
    if config.resume is not None:
        if config.objective == "clip":
            raise ValueError("--resume: --objective clip (pretraining) writes no checkpoints; the fine-tuning objectives resume")
        if not Path(config.resume).is_dir():
            raise FileNotFoundError(f"--resume {config.resume}: no such run folder")
        if Path(config.resume).resolve() != Path(config.out).resolve():
            raise ValueError(f"--resume {config.resume} with --out {config.out}: a resumed run goes on in its own folder; "
                             "drop --out")


def resolve_device(device: str) -> str:
    """``--device`` as a device this machine has: auto, cpu, cuda, cuda:N or mps; else a one-line error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: PyTorch sees no CUDA GPU on this machine; use --device cpu (or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: Apple's MPS is not available here; use --device cpu (or auto)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: clip_min runs on cpu, cuda or mps")
    return device


def mixed_precision(amp: str, device: str):
    """The autocast context factory and the gradient scaler (fp16 only) for ``amp`` on ``device``."""
    device_type = torch.device(device).type
    if amp == "auto":
        if device_type != "cuda":
            return nullcontext, None
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "off":
        return nullcontext, None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    # bf16 keeps float32's exponent range, so only fp16 needs its gradients scaled.
    scaler = torch.amp.GradScaler(device_type) if amp == "fp16" else None
    return partial(torch.autocast, device_type, dtype=dtype), scaler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Split:
    """A split ready for the text tower: image features and the two texts' token ids."""

    examples: list[Example]
    image_features: torch.Tensor  # (N, embed_dim), from the frozen vision tower
    descriptions: torch.Tensor  # (N, context) token ids
    captions: torch.Tensor  # (N, context) token ids


def load_split(model: CLIP, data: Path, images: str | None, split: str, weights_id: str, device: str, autocast) -> Split:
    """Read a Concadia split, encode its images (cached), tokenize its texts; report what was skipped."""
    examples, skips = read_concadia(data, split, images)
    features, ok = encode_images(model, [e.image_path for e in examples], weights_id, device=device,
                                 autocast=autocast, desc=f"encoding {split} images")
    if not ok.all():
        skips.add("undecodable image", int((~ok).sum()))
        keep = ok.nonzero().squeeze(1).tolist()
        examples, features = [examples[i] for i in keep], features[ok]
    if not examples:
        raise DataError(f"no usable records in split {split!r} of {data}: {skips.summary()}")
    print(f"{split}: {len(examples)} images; {skips.summary()}")
    context = model.config.context_length
    texts = [e.description for e in examples] + [e.caption for e in examples]
    tokens, cut = get_tokenizer().tokenize_counting_cuts(texts, context)  # (2N, context)
    if cut:
        print(f"{split}: {cut} texts longer than {context} tokens were cut to {context}")
    descriptions, captions = tokens.chunk(2)
    return Split(examples, features, descriptions, captions)


@torch.no_grad()
def split_scores(model: CLIP, split: Split, device: str, autocast, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """C(im, des) and C(im, cap) for every image of a split, each (N,)."""
    c_des, c_cap = [], []
    for start in range(0, len(split.examples), batch_size):
        rows = slice(start, start + batch_size)
        image = split.image_features[rows].to(device)
        texts = torch.cat([split.descriptions[rows], split.captions[rows]]).to(device)
        with autocast():
            des, cap = model.encode_text(texts).float().chunk(2)
        c_des.append(score(image, des, model.logit_scale).cpu())
        c_cap.append(score(image, cap, model.logit_scale).cpu())
    return torch.cat(c_des), torch.cat(c_cap)


def split_accuracy(model: CLIP, split: Split, device: str, autocast) -> float:
    return preference_accuracy(*split_scores(model, split, device, autocast))


@dataclass
class TaskData:
    task: TransferTask  # only the images that decoded
    image_features: torch.Tensor  # (N, embed_dim)


def load_tasks(model: CLIP, folders, weights_id: str, device: str, autocast) -> list[TaskData]:
    loaded = []
    for folder in folders:
        task = read_task(folder)
        features, ok = encode_task(model, task, weights_id, device, autocast)
        if not ok.all():
            print(f"transfer task {task.name}: {int((~ok).sum())} of {len(ok)} images did not decode and are left out")
        good = ok.tolist()
        kept = replace(task, labels=[label for label, g in zip(task.labels, good) if g],
                       image_paths=[path for path, g in zip(task.image_paths, good) if g],
                       pixels=None if task.pixels is None else task.pixels[ok.numpy()])
        loaded.append(TaskData(kept, features[ok]))
    return loaded


def refresh_image_features(model: CLIP, splits: list[Split], tasks: list[TaskData], device: str, autocast) -> None:
    """With --towers both the vision tower trains: encode the evaluation images again with it as it is now."""
    for split in splits:
        split.image_features, _ = encode_now(model, [e.image_path for e in split.examples], device=device,
                                             autocast=autocast, desc="encoding images with the training vision tower")
    for data in tasks:
        data.image_features, _ = encode_now(model, data.task.image_paths, data.task.pixels, device=device,
                                            autocast=autocast, desc="encoding images with the training vision tower")


@torch.no_grad()
def transfer_f1(model: CLIP, tasks: list[TaskData], template: str, device: str, autocast) -> dict[str, float]:
    scores = {}
    for data in tasks:
        with autocast():
            classes = class_text_features(model, data.task.classes, template, device)
        scores[data.task.name] = zero_shot_f1(data.image_features.to(device), data.task.labels, classes)
    return scores


def trainable_parameters(model: CLIP, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze what the setting keeps fixed and return what it trains."""
    if config.finetune == "lora":
        apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets, config.towers)
        return [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    # Full fine-tuning trains the text tower (and the vision tower with --towers both); the
    # temperature stays fixed: it scales both scores alike and cannot change a preference.
    towers = [model.token_embedding, model.transformer, model.ln_final]
    if config.towers == "both":
        towers.append(model.visual)
    for module in towers:
        for p in module.parameters():
            p.requires_grad_(True)
    model.positional_embedding.requires_grad_(True)
    model.text_projection.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def step_loss(model: CLIP, rotation: Rotation | None, config: TrainConfig, image: torch.Tensor,
              descriptions: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
    """The objective on one batch: image features (B, embed_dim), token ids (B, context) each."""
    logit_scale = model.logit_scale
    if config.objective == "behavioral":
        des, cap = model.encode_text(torch.cat([descriptions, captions])).float().chunk(2)
        return behavioral_loss(score(image, cap, logit_scale), score(image, des, logit_scale))
    cap, des, cap_with_des, des_with_cap = (
        t.float() for t in interchange_features(model, rotation, captions, descriptions, config.layer, config.intervention_size)
    )
    c_cap, c_des = score(image, cap, logit_scale), score(image, des, logit_scale)
    l_iit = iit_loss(c_cap, score(image, cap_with_des, logit_scale), c_des, score(image, des_with_cap, logit_scale))
    if config.objective == "iit-das":
        return l_iit
    return joint_loss(l_iit, behavioral_loss(c_cap, c_des), config.joint_alpha)


def batch_images(model: CLIP, split: Split, rows: torch.Tensor, config: TrainConfig, device: str) -> torch.Tensor:
    """Image features of the batch: cached ones, or (with --towers both) fresh from the vision tower."""
    if config.towers == "text":
        return split.image_features[rows].to(device)
    resolution = model.config.image_resolution
    pixels = torch.stack([preprocess(load_image(split.examples[i].image_path), resolution) for i in rows.tolist()])
    return model.encode_image(pixels.to(device)).float()


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: Path, records: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


# Test-only fault injection (tests/test_checkpoint.py): make the loss of step N NaN, or have the
# process SIGKILL itself at the end of step N, as a crash would. Unset in real runs.
INJECT_NAN_AT_STEP = "CLIP_MIN_INJECT_NAN_AT_STEP"
KILL_AT_STEP = "CLIP_MIN_KILL_AT_STEP"
LOSS_NAMES = {"behavioral": "behavioral loss (Eq. 1)", "iit-das": "IIT loss (Eqs. 2-3)", "joint": "joint loss (Eq. 5)"}


def finetune(config: TrainConfig, weights: Path, data: Path, tasks: list[str]) -> dict:
    """Fine-tune ``weights`` on the Concadia folder ``data``; return the summary (also written to disk).

    Under torchrun every process runs this; the main one returns the summary, the others {}.
    """
    device = distributed.device_for(resolve_device(config.device))
    autocast, scaler = mixed_precision(config.amp, device)
    out = Path(config.out)
    main = distributed.is_main()
    seed_everything(config.seed)
    model = load_clip(weights, device)
    check_vocabulary(model, weights)
    config = defaults(config, model.config.text_layers, model.config.text_width)
    check_against_model(config, model)
    config = replace(config, checkpoint_every=config.checkpoint_every or config.eval_every)
    run_config = {**asdict(config), "weights": str(weights), "data": str(data), "transfer": list(tasks)}
    weights_id = content_fingerprint(weights)
    # A checkpoint to resume from is read and checked before anything in the run folder changes.
    resumed = distributed.from_main(lambda: checkpoint.read(out, run_config, weights_id)) if config.resume else None

    val = test = None
    task_data = []
    with distributed.node_main_first():  # the first process encodes the images; the others read its cache
        train = load_split(model, data, config.images, "train", weights_id, device, autocast)
        if main:
            val, test = (load_split(model, data, config.images, s, weights_id, device, autocast) for s in ("val", "test"))
            task_data = load_tasks(model, tasks, weights_id, device, autocast)
    if resumed:
        checkpoint.check_train_size(resumed, len(train.examples))
    if main and not config.toy and not task_data:
        print("note: no --transfer tasks, so model selection (Appendix C) falls back to validation accuracy alone; "
              "give --transfer the Food-101, CIFAR-100 and ImageNet folders for the paper's trade-off")
    template = PROMPTS[config.prompt]
    before = None
    if main:
        # The base's fingerprint goes beside the config, so eval.py --run can tell a replaced base.
        start_run_folder(out, {**run_config, "weights_id": weights_id}, resumed)
        if resumed:
            before = resumed["run"]["before"]
        else:
            before = dict(accuracy=split_accuracy(model, test, device, autocast),
                          transfer_f1=transfer_f1(model, task_data, template, device, autocast))
        print(f"before: test preference accuracy {before['accuracy']:.3f}, transfer F1 {fmt(before['transfer_f1'])}")

    params = trainable_parameters(model, config)
    groups = [dict(params=list(params))]
    rotation = None
    if config.objective in ("iit-das", "joint"):
        rotation = Rotation(model.config.text_width).to(device)
        params += list(rotation.parameters())
        groups.append(dict(params=list(rotation.parameters()), lr=config.rotation_lr))
    # Every process drew the same initial adapters from the same seed; copying makes sure of it.
    distributed.copy_from_main(params + ([] if rotation is None else list(rotation.buffers())))
    names = {p: name for name, p in model.named_parameters()}
    if rotation is not None:
        names.update({p: f"rotation.{name}" for name, p in rotation.named_parameters()})
    optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.l2)
    # An IIT-DAS epoch is iit_samples triplets drawn on from the shuffled stream, a plain epoch the split once.
    steps_per_epoch = math.ceil((config.iit_samples or len(train.examples)) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    order = checkpoint.BatchOrder(len(train.examples), config.batch_size, config.seed)
    run = dict(config=run_config, weights_id=weights_id, train_images=len(train.examples), before=before)
    progress = checkpoint.restore(resumed, model, rotation, optimizer, scaler, order) if resumed else checkpoint.Progress()
    saved_step = progress.step if resumed else None
    best = resumed.get("selected") if resumed else None  # the selected step's tensors so far (selected.snapshot)
    if main and best is not None:
        selected.write(out, best)  # a selection written after the checkpoint belongs to steps about to be rerun

    def evaluate(step: int) -> None:
        model.eval()
        if config.towers == "both":
            refresh_image_features(model, [val, test], task_data, device, autocast)
        f1 = transfer_f1(model, task_data, template, device, autocast)
        losses = progress.losses[-config.eval_every:]
        nonlocal best
        record = dict(step=step, loss=statistics.fmean(losses) if losses else None,
                      val_accuracy=split_accuracy(model, val, device, autocast),
                      test_accuracy=split_accuracy(model, test, device, autocast), transfer_f1=f1,
                      transfer_score=transfer_score(f1, before["transfer_f1"]), skipped_steps=progress.skipped_steps)
        progress.metrics.append(record)
        append_jsonl(out / "metrics.jsonl", record)
        best = keep_if_selected(out, progress, record, before["transfer_f1"], model, rotation, config.trade_off_a, best)
        model.train()

    nan_at, kill_at = (int(os.environ.get(name, "0")) for name in (INJECT_NAN_AT_STEP, KILL_AT_STEP))
    started = time.perf_counter() - progress.wall_s  # wall time goes on from the checkpoint's
    if main and not progress.metrics:
        evaluate(0)
    model.train()
    # As a context, the bar is closed before an error is printed, so the error gets a line of its own.
    with tqdm(total=total, initial=progress.step, desc=f"training ({config.objective}, {config.finetune})", unit="step",
              disable=not main) as bar:
        while progress.step < total:
            tick = time.perf_counter()
            step = progress.step + 1
            rows = order.next()  # the global batch, the same in every process
            local = distributed.shard(rows)  # this process's part of it
            optimizer.zero_grad(set_to_none=True)
            # Each process weights its mean loss by its share of the global batch, so that summed over
            # the processes they are the loss and gradient of the global batch (see distributed.py).
            loss = torch.zeros((), device=device)
            if len(local):
                with autocast():
                    image = batch_images(model, train, local, config, device)
                    loss = step_loss(model, rotation, config, image, train.descriptions[local].to(device),
                                     train.captions[local].to(device)) * (len(local) / len(rows))
                if step == nan_at:
                    loss = loss * math.nan
                (loss if scaler is None else scaler.scale(loss)).backward()
            loss = distributed.sum_gradients(params, loss).item()
            skipped = False
            if scaler is None:
                stop_if_not_finite(step, loss, params, names, config, saved_step)
                optimizer.step()
            else:
                # The scaler skips a step whose gradients overflowed fp16 and lowers its scale; that
                # happens now and then, so it is counted, not fatal.
                scale = scaler.get_scale()
                scaler.step(optimizer)
                scaler.update()
                skipped = scaler.get_scale() < scale
                progress.skipped_steps += int(skipped)
            progress.step = step
            if not skipped:  # a skipped step's loss, often inf or nan, stays out of the averages
                progress.losses.append(loss)
            progress.step_times.append(time.perf_counter() - tick)
            bar.update(1)
            if progress.losses:
                bar.set_postfix(loss=f"{statistics.fmean(progress.losses[-20:]):.3f}")
            evaluating = step % config.eval_every == 0 or step == total
            saving = step % config.checkpoint_every == 0 or step == total
            if main and evaluating:
                evaluate(step)
            if main and saving:
                progress.wall_s = time.perf_counter() - started
                checkpoint.save(out, run, progress, model, rotation, optimizer, scaler, order, selected=best)
            if saving:
                saved_step = step
            if evaluating or saving:
                distributed.barrier()  # the other processes wait for the main one
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    if not main:
        distributed.barrier()  # wait for the main process to finish
        return {}
    model.eval()
    if config.towers == "both":
        refresh_image_features(model, [test], task_data, device, autocast)
    accuracy = split_accuracy(model, test, device, autocast)
    f1 = transfer_f1(model, task_data, template, device, autocast)
    wall = time.perf_counter() - started
    save_run(out, model, rotation, config)
    summary = dict(
        objective=config.objective, finetune=config.finetune, toy=config.toy, steps=progress.step, wall_s=round(wall, 2),
        step_time_s=statistics.median(progress.step_times) if progress.step_times else None,
        concadia_accuracy_before=before["accuracy"], concadia_accuracy=accuracy,
        transfer_f1_before=before["transfer_f1"], transfer_f1=f1, transfer_score=transfer_score(f1, before["transfer_f1"]),
        test_images=len(test.examples), train_images=len(train.examples),
        skipped_steps=progress.skipped_steps, resumes=progress.resumes, processes=distributed.world_size(),
        **selected_summary(progress),
    )
    write_json(out / "summary.json", summary)
    score_text = summary["transfer_score"] if summary["transfer_score"] is None else round(summary["transfer_score"], 3)
    print(f"after {progress.step} steps: test preference accuracy {before['accuracy']:.3f} -> {accuracy:.3f}, "
          f"transfer F1 {fmt(f1)}, transfer score {score_text}")
    if summary["selected_step"] is not None:
        print(f"selected step {summary['selected_step']} (Appendix C, a = {config.trade_off_a}): validation accuracy "
              f"{summary['selected_val_accuracy']:.3f}, test accuracy {summary['selected_test_accuracy']:.3f}, "
              f"transfer score {summary['selected_transfer_score']}; eval.py --run uses it (--step last: the last)")
    print(f"wrote {out / 'summary.json'}")
    distributed.barrier()
    return summary


def keep_if_selected(out: Path, progress: checkpoint.Progress, record: dict, base_f1: dict, model: CLIP,
                     rotation: Rotation | None, a: float, best: dict | None) -> dict | None:
    """Appendix C as the run goes: keep this evaluation's tensors if its trade-off beats the best so far."""
    if record["step"] == 0:  # the untouched model is the base of the recovery, not a candidate
        return best
    value = selection_score(record["val_accuracy"], record["transfer_f1"], base_f1, a)
    if progress.selected_step is not None and value <= progress.selected_score:  # the earliest wins a tie
        return best
    best = selected.snapshot(record["step"], model, rotation)
    selected.write(out, best)
    progress.selected_step, progress.selected_score = record["step"], value
    return best


def selected_summary(progress: checkpoint.Progress) -> dict:
    """summary.json's numbers at the selected step, as metrics.jsonl logged them."""
    record = next((r for r in progress.metrics if r["step"] == progress.selected_step), {})
    return dict(selected_step=progress.selected_step, selected_val_accuracy=record.get("val_accuracy"),
                selected_test_accuracy=record.get("test_accuracy"), selected_transfer_f1=record.get("transfer_f1"),
                selected_transfer_score=record.get("transfer_score"))


def start_run_folder(out: Path, run_config: dict, resumed: dict | None) -> None:
    """Write config.json; metrics.jsonl starts empty, or holds the checkpoint's records when resuming."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", run_config)
    if resumed is None:
        # An earlier run's checkpoint and selection would not match this run's config.json.
        (out / checkpoint.NAME).unlink(missing_ok=True)
        (out / selected.NAME).unlink(missing_ok=True)
    # Records logged after the checkpoint are dropped: the resumed run logs those steps again.
    write_jsonl(out / "metrics.jsonl", resumed["progress"]["metrics"] if resumed else [])


def stop_if_not_finite(step: int, loss: float, params: list[torch.Tensor], names: dict, config: TrainConfig,
                       saved_step: int | None) -> None:
    """Stop at a non-finite loss or gradient, naming the step and the loss, before the optimizer uses it."""
    stopped = ("stopped before the first checkpoint" if saved_step is None
               else f"stopped; the checkpoint of step {saved_step} in {config.out} is intact")
    what = LOSS_NAMES[config.objective]
    if not math.isfinite(loss):
        raise FloatingPointError(f"step {step}: the {what} is {loss}; {stopped}; try a lower --lr or --amp off")
    grads = [p for p in params if p.grad is not None]
    if not torch.stack([torch.isfinite(p.grad).all() for p in grads]).all():
        name = next(names[p] for p in grads if not torch.isfinite(p.grad).all())
        raise FloatingPointError(f"step {step}: the gradient of the {what} is not finite in {name}; {stopped}; "
                                 "try a lower --lr or --amp off")


def save_run(out: Path, model: CLIP, rotation: Rotation | None, config: TrainConfig) -> None:
    """Adapters (LoRA and rotation) apart from the frozen weights; the whole model for full fine-tuning."""
    adapters = {}
    if config.finetune == "lora":
        adapters["lora"] = lora_state_dict(model)
    else:
        save_clip(model, out / "weights.pt")
    if rotation is not None:
        adapters["rotation"] = {k: v.detach().cpu() for k, v in rotation.state_dict().items()}
    if adapters:
        atomic_save(adapters, out / "adapters.pt")


def fmt(f1: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.3f}" for name, value in f1.items()) or "(no transfer tasks)"
