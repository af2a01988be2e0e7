"""Everything a fine-tuning run does before its first step, behind one call: :func:`start_or_resume`.

In order: the device and its precision; the seeds; the base weights with their fingerprint (a
SHA-256 of the bytes loaded, so that a resumed run and eval.py can tell a replaced base); the
settings, resolved against the base; with ``--resume``, the checkpoint, read and checked before
anything else is loaded; the data (each machine's first process encodes the images, the others
read its cache) with the training split's digest; the run folder and the numbers before training
(the main process); the adapters, the rotation and Adam; and, resuming, all that the checkpoint
holds put back in place. Each part refuses what it cannot use before the next begins, so a
refused run leaves its folder as it was.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import checkpoint, distributed, selected
from ..lora import apply_lora
from ..model import CLIP
from ..rotation import Rotation
from ..weights import load_weights
from .config import IIT_OBJECTIVES, SAMPLE_SEED, TrainConfig, defaults
from .device import mixed_precision, resolve_device, seed_everything
from .evaluation import Split, TaskData, fmt, load_split, load_tasks, measure, sample_split, split_digest
from .folder import start_run_folder
from .rows import TrainingRows, training_rows


@dataclass
class Batches:
    """The training batches: rows of the training split in an order the checkpoint carries."""

    split: Split  # the training split: cached image features and token ids
    rows: TrainingRows  # what a batch indexes: images, or one-way IIT rows (clip_min.train.rows)
    order: checkpoint.BatchOrder  # the global batches, the same in every process

    def next(self) -> torch.Tensor:
        """Row indices (B,) of the next global batch."""
        return self.order.next()


@dataclass
class Evaluation:
    """What the main process evaluates on, and the base's numbers that the transfer score compares with."""

    val: Split  # model selection (Appendix C) reads it
    test: Split  # reported beside it
    tasks: list[TaskData]  # the transfer tasks
    before: dict  # test preference accuracy and transfer F1 of the base, measured before the first step


@dataclass
class Record:
    """What the run writes beside the tensors: its folder, the checkpoint's account of the run, the selection."""

    out: Path  # the run folder
    about: dict  # the checkpoint's "run": resolved config, base fingerprint, training split's digest, numbers before
    best: dict | None  # the selected step's tensors so far (selected.snapshot)
    saved_step: int | None  # the last checkpoint's step, for the error of a step that goes wrong
    started: float  # perf_counter at the first step, less the wall time of earlier sessions


@dataclass
class Run:
    """What a fine-tuning run works with; each process has its own."""

    config: TrainConfig  # resolved: every default filled in
    device: str
    autocast: object  # the autocast context factory (nullcontext without mixed precision)
    model: CLIP
    rotation: Rotation | None  # DAS's rho (IIT-DAS, joint)
    optimizer: torch.optim.Optimizer  # Adam over the adapters (or the tower) and the rotation
    scaler: torch.amp.GradScaler | None  # fp16 only
    batches: Batches
    progress: checkpoint.Progress  # what the loop has done, across resumes
    evaluation: Evaluation | None  # None outside the main process
    record: Record


def start_or_resume(config: TrainConfig, weights: Path, data: Path, tasks: list[str]) -> Run:
    """Load the base and the data, start the run folder, build the adapters and Adam, or resume them."""
    device = distributed.device_for(resolve_device(config.device))
    out, main = Path(config.out), distributed.is_main()
    seed_everything(config.seed)
    model, weights_id = load_weights(weights, device)  # the fingerprint of the bytes loaded
    config = defaults(config, model.config.text_layers, model.config.text_width)  # train.py's were checked: pipeline.prepare
    autocast, scaler = mixed_precision(config.amp, device)
    run_config = {**asdict(config), "weights": str(weights), "data": str(data), "transfer": list(tasks)}
    # A checkpoint to resume from is read and checked before anything in the run folder changes.
    resumed = distributed.from_main(lambda: checkpoint.read(out, run_config, weights_id)) if config.resume else None
    train, val, test, task_data = load_data(model, config, data, tasks, weights_id, device, autocast)
    train_id = distributed.from_main(lambda: split_digest(train.examples))  # read once; every process can refuse
    if resumed:
        checkpoint.check_train_data(resumed, len(train.examples), train_id)
    evaluation = None
    if main:
        if not config.toy and not task_data:
            print("note: no --transfer tasks, so model selection (Appendix C) falls back to validation accuracy alone; "
                  "give --transfer the Food-101, CIFAR-100 and ImageNet folders for the paper's trade-off")
        # The base's fingerprint goes beside the config, so eval.py --run can tell a replaced base.
        start_run_folder(out, {**run_config, "weights_id": weights_id}, resumed)
        before = resumed["run"]["before"] if resumed else measure(model, test, task_data, config.prompt, device, autocast)
        print(f"before: test preference accuracy {before['accuracy']:.3f}, transfer F1 {fmt(before['transfer_f1'])}")
        evaluation = Evaluation(val, test, task_data, before)
    rotation, optimizer = make_optimizer(model, config, device)
    rows = training_rows(config, len(train.examples))
    order = checkpoint.BatchOrder(len(rows), config.batch_size, config.seed, reshuffle=config.shuffle == "every-epoch")
    batches = Batches(train, rows, order)
    about = dict(config=run_config, weights_id=weights_id, train_images=len(train.examples), train_id=train_id,
                 before=None if evaluation is None else evaluation.before)
    progress = (checkpoint.restore(resumed, model, rotation, optimizer, scaler, batches.order) if resumed
                else checkpoint.Progress())
    best = resumed.get("selected") if resumed else None
    if main and best is not None:
        selected.write(out, best)  # a selection written after the checkpoint belongs to steps about to be rerun
    record = Record(out, about, best, saved_step=progress.step if resumed else None,
                    started=time.perf_counter() - progress.wall_s)  # wall time goes on from the checkpoint's
    return Run(config, device, autocast, model, rotation, optimizer, scaler, batches, progress, evaluation, record)


def load_data(model: CLIP, config: TrainConfig, data: Path, tasks: list[str], weights_id: str, device: str, autocast
              ) -> tuple[Split, Split | None, Split | None, list[TaskData]]:
    """The training split; in the main process also the validation and test splits and the transfer tasks."""
    with distributed.node_main_first():  # the first process encodes the images; the others read its cache
        train = load_split(model, data, config.images, "train", weights_id, device, autocast)
        if not distributed.is_main():
            return train, None, None, []
        val, test = (load_split(model, data, config.images, s, weights_id, device, autocast) for s in ("val", "test"))
        task_data = load_tasks(model, tasks, weights_id, device, autocast)
    return train, sample_split(val, config.val_images, SAMPLE_SEED), test, task_data


def make_optimizer(model: CLIP, config: TrainConfig, device: str) -> tuple[Rotation | None, torch.optim.Optimizer]:
    """Make the trained parameters (adapters or tower, and the rotation); return the rotation and Adam over them."""
    params = trainable_parameters(model, config)
    groups = [dict(params=list(params))]
    rotation = None
    if config.objective in IIT_OBJECTIVES:
        rotation = Rotation(model.config.text_width, config.orthogonal_map).to(device)
        params += list(rotation.parameters())
        groups.append(dict(params=list(rotation.parameters()), lr=config.rotation_lr))
    # Every process drew the same initial adapters from the same seed; copying makes sure of it.
    distributed.copy_from_main(params + ([] if rotation is None else list(rotation.buffers())))
    return rotation, torch.optim.Adam(groups, lr=config.lr, weight_decay=config.l2)


def trainable_parameters(model: CLIP, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze what the setting keeps fixed and return what it trains."""
    if config.finetune == "lora":
        apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets, config.towers)
        return [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    # Full fine-tuning trains the text tower, the vision tower with --towers both (the paper's "all
    # the parameters of CLIP"), and the temperature with --logit-scale trained (both recipes): it
    # scales both scores of a preference alike, so it moves the loss but cannot change which text wins.
    towers = [model.token_embedding, model.transformer, model.ln_final]
    if config.towers == "both":
        towers.append(model.visual)
    for module in towers:
        for p in module.parameters():
            p.requires_grad_(True)
    model.positional_embedding.requires_grad_(True)
    model.text_projection.requires_grad_(True)
    model.logit_scale.requires_grad_(config.logit_scale == "trained")
    return [p for p in model.parameters() if p.requires_grad]
