"""Fine-tuning CLIP to prefer descriptions (Eq. 1), with IIT-DAS (Eq. 2-4) or both (Eq. 5).

Only the text tower is trained by default, as in the authors' code: every image's features are
computed once (``clip_min.train.features``) and each step runs the text tower on the batch's captions
and descriptions. :func:`finetune` reads top to bottom: set up (:func:`start`), then for each step
a batch, :func:`step_loss`, backward, the optimizer's step, and at intervals :func:`evaluate` and
:func:`save_checkpoint`; :func:`finish` measures the end. It writes into the run folder:

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

import math
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from . import checkpoint, distributed, selected
from ..images import load_image, preprocess
from ..intervention import interchange_features, one_way_features
from ..lora import apply_lora
from ..losses import behavioral_loss, iit_loss, iit_loss_rows, joint_loss, score
from ..metrics import transfer_score
from ..model import CLIP
from ..rotation import Rotation
from ..sorted_parts import in_sorted_parts
from ..weights import check_vocabulary, load_weights
from .config import IIT_OBJECTIVES, SAMPLE_SEED, TrainConfig, check_against_model, defaults
from .device import mixed_precision, resolve_device, seed_everything
from .evaluation import (Split, TaskData, fmt, load_split, load_tasks, refresh_image_features, rounded, sample_split,
                         split_accuracy, split_digest, transfer_f1)
from .folder import append_jsonl, save_run, start_run_folder, write_json
from .rows import TrainingRows, rows_per_epoch, training_rows

LOSS_NAMES = {"behavioral": "behavioral loss (Eq. 1)", "iit-das": "IIT loss (Eqs. 2-3)", "joint": "joint loss (Eq. 5)"}


def step_loss(model: CLIP, rotation: Rotation | None, config: TrainConfig, image: torch.Tensor,
              descriptions: torch.Tensor, captions: torch.Tensor, caption_base: torch.Tensor | None = None) -> torch.Tensor:
    """The objective on one batch: image features (B, embed_dim), token ids (B, context) each.

    ``caption_base`` (B,) marks one-way IIT rows (clip_min.train.rows): which text is each row's base.
    """
    logit_scale = model.logit_scale
    if config.objective == "behavioral":
        des, cap = in_sorted_parts(model.encode_text, torch.cat([descriptions, captions])).float().chunk(2)
        return behavioral_loss(c_cap=score(image, cap, logit_scale), c_des=score(image, des, logit_scale))
    if caption_base is not None:
        return one_way_loss(model, rotation, config, image, descriptions, captions, caption_base)
    swap = partial(interchange_features, model, rotation, layer=config.layer, k=config.intervention_size)
    features = in_sorted_parts(swap, captions, descriptions)  # each text with its site, and with its pair's
    cap, des, cap_with_des, des_with_cap = (t.float() for t in features)
    c_cap, c_des = score(image, cap, logit_scale), score(image, des, logit_scale)
    l_iit = iit_loss(c_cap=c_cap, c_cap_with_des=score(image, cap_with_des, logit_scale),
                     c_des=c_des, c_des_with_cap=score(image, des_with_cap, logit_scale))
    if config.objective == "iit-das":
        return l_iit
    return joint_loss(l_iit=l_iit, l_behavioral=behavioral_loss(c_cap=c_cap, c_des=c_des), a=config.joint_alpha)


def one_way_loss(model: CLIP, rotation: Rotation, config: TrainConfig, image: torch.Tensor, descriptions: torch.Tensor,
                 captions: torch.Tensor, caption_base: torch.Tensor) -> torch.Tensor:
    """IIT-DAS (and joint) on one-way rows: each row intervenes on its base only."""
    logit_scale = model.logit_scale
    pick = caption_base[:, None]  # (B, 1)
    base, source = torch.where(pick, captions, descriptions), torch.where(pick, descriptions, captions)
    swap = partial(one_way_features, model, rotation, layer=config.layer, k=config.intervention_size)
    features = in_sorted_parts(swap, base, source)
    base_f, source_f, patched_f = (t.float() for t in features)
    c_base, c_source = score(image, base_f, logit_scale), score(image, source_f, logit_scale)
    l_iit = iit_loss_rows(c_base=c_base, c_base_with_source=score(image, patched_f, logit_scale), caption_base=caption_base)
    if config.objective == "iit-das":
        return l_iit
    c_cap, c_des = torch.where(caption_base, c_base, c_source), torch.where(caption_base, c_source, c_base)
    return joint_loss(l_iit=l_iit, l_behavioral=behavioral_loss(c_cap=c_cap, c_des=c_des), a=config.joint_alpha)


@dataclass
class Run:
    """Everything a fine-tuning run holds while it trains; each process has its own."""

    config: TrainConfig  # resolved: every default filled in
    out: Path  # the run folder
    main: bool  # the process that evaluates and writes the run folder
    device: str
    autocast: object  # the autocast context factory (nullcontext without mixed precision)
    scaler: torch.amp.GradScaler | None  # fp16 only
    model: CLIP
    rotation: Rotation | None  # DAS's rho (IIT-DAS, joint)
    params: list[torch.nn.Parameter]  # everything the optimizer trains, the rotation's included
    names: dict  # parameter -> its name, for errors
    optimizer: torch.optim.Optimizer
    rows: TrainingRows  # what the batches index: images, or one-way IIT rows (clip_min.train.rows)
    order: checkpoint.BatchOrder  # the global batches, checkpointed
    train: Split
    val: Split | None  # None outside the main process
    test: Split | None
    tasks: list[TaskData]  # transfer tasks (main process only)
    about: dict  # the checkpoint's "run": resolved config, base fingerprint, training images, numbers before
    progress: checkpoint.Progress
    best: dict | None  # the selected step's tensors so far (selected.snapshot)
    saved_step: int | None  # the last checkpoint's step
    total: int  # optimizer steps of the whole run
    started: float = 0.0  # perf_counter at the start, less the wall time of earlier sessions

    @property
    def before(self) -> dict | None:
        return self.about["before"]


def finetune(config: TrainConfig, weights: Path, data: Path, tasks: list[str]) -> dict:
    """Fine-tune ``weights`` on the Concadia folder ``data``; return the summary (also written to disk).

    Under torchrun every process runs this; the main one returns the summary, the others {}.
    """
    run = start(config, weights, data, tasks)
    config, progress = run.config, run.progress
    run.started = time.perf_counter() - progress.wall_s  # wall time goes on from the checkpoint's
    if run.main and not progress.metrics:
        evaluate(run, 0)
    run.model.train()
    # As a context, the bar is closed before an error is printed, so the error gets a line of its own.
    with tqdm(total=run.total, initial=progress.step, desc=f"training ({config.objective}, {config.finetune})",
              unit="step", disable=not run.main) as bar:
        while progress.step < run.total:
            tick = time.perf_counter()
            step = progress.step + 1
            rows = run.order.next()  # the global batch, the same in every process
            run.optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(run, rows)  # step_loss on this process's share of the batch
            if loss.requires_grad:  # a process whose share of a short last batch is empty has nothing to do
                (loss if run.scaler is None else run.scaler.scale(loss)).backward()
            loss = distributed.sum_gradients(run.params, loss).item()
            skipped = optimizer_step(run, step, loss)
            record_step(progress, step, loss, skipped, time.perf_counter() - tick, bar)
            evaluating = step % config.eval_every == 0 or step == run.total
            saving = step % config.checkpoint_every == 0 or step == run.total
            if run.main and evaluating:
                evaluate(run, step)
            if saving:
                save_checkpoint(run, step)
            if evaluating or saving:
                distributed.barrier()  # the other processes wait for the main one
    return finish(run)


def start(config: TrainConfig, weights: Path, data: Path, tasks: list[str]) -> Run:
    """Load the base and the data, measure the start, build the adapters and the optimizer (or resume them)."""
    device = distributed.device_for(resolve_device(config.device))
    autocast, scaler = mixed_precision(config.amp, device)
    out, main = Path(config.out), distributed.is_main()
    seed_everything(config.seed)
    model, weights_id = load_weights(weights, device)  # the fingerprint of the bytes loaded
    check_vocabulary(model, weights)
    config = defaults(config, model.config.text_layers, model.config.text_width)
    check_against_model(config, model.config)
    run_config = {**asdict(config), "weights": str(weights), "data": str(data), "transfer": list(tasks)}
    # A checkpoint to resume from is read and checked before anything in the run folder changes.
    resumed = distributed.from_main(lambda: checkpoint.read(out, run_config, weights_id)) if config.resume else None
    with distributed.node_main_first():  # the first process encodes the images; the others read its cache
        train = load_split(model, data, config.images, "train", weights_id, device, autocast)
        val = test = None
        task_data = []
        if main:
            val, test = (load_split(model, data, config.images, s, weights_id, device, autocast) for s in ("val", "test"))
            val = sample_split(val, config.val_images, SAMPLE_SEED)
            task_data = load_tasks(model, tasks, weights_id, device, autocast)
    train_id = distributed.from_main(lambda: split_digest(train.examples))  # read once; every process can refuse
    if resumed:
        checkpoint.check_train_data(resumed, len(train.examples), train_id)
    before = None
    if main:
        if not config.toy and not task_data:
            print("note: no --transfer tasks, so model selection (Appendix C) falls back to validation accuracy alone; "
                  "give --transfer the Food-101, CIFAR-100 and ImageNet folders for the paper's trade-off")
        # The base's fingerprint goes beside the config, so eval.py --run can tell a replaced base.
        start_run_folder(out, {**run_config, "weights_id": weights_id}, resumed)
        before = resumed["run"]["before"] if resumed else measure(model, test, task_data, config, device, autocast)
        print(f"before: test preference accuracy {before['accuracy']:.3f}, transfer F1 {fmt(before['transfer_f1'])}")
    params, names, rotation, optimizer = make_optimizer(model, config, device)
    rows = training_rows(config, len(train.examples))
    order = checkpoint.BatchOrder(len(rows), config.batch_size, config.seed)
    about = dict(config=run_config, weights_id=weights_id, train_images=len(train.examples), train_id=train_id,
                 before=before)
    progress = checkpoint.restore(resumed, model, rotation, optimizer, scaler, order) if resumed else checkpoint.Progress()
    best = resumed.get("selected") if resumed else None
    if main and best is not None:
        selected.write(out, best)  # a selection written after the checkpoint belongs to steps about to be rerun
    return Run(config, out, main, device, autocast, scaler, model, rotation, params, names, optimizer, rows, order, train, val,
               test, task_data, about, progress, best, saved_step=progress.step if resumed else None,
               total=total_steps(config, len(train.examples)))


def measure(model: CLIP, split: Split, tasks: list[TaskData], config: TrainConfig, device: str, autocast) -> dict:
    """Test preference accuracy and transfer F1 of the model as it is."""
    return dict(accuracy=split_accuracy(model, split, device, autocast),
                transfer_f1=transfer_f1(model, tasks, config.prompt, device, autocast))


def make_optimizer(model: CLIP, config: TrainConfig, device: str):
    """The trained parameters (adapters or tower, and the rotation), their names, the rotation, and Adam."""
    params = trainable_parameters(model, config)
    groups = [dict(params=list(params))]
    rotation = None
    if config.objective in IIT_OBJECTIVES:
        rotation = Rotation(model.config.text_width, config.orthogonal_map).to(device)
        params += list(rotation.parameters())
        groups.append(dict(params=list(rotation.parameters()), lr=config.rotation_lr))
    # Every process drew the same initial adapters from the same seed; copying makes sure of it.
    distributed.copy_from_main(params + ([] if rotation is None else list(rotation.buffers())))
    names = {p: name for name, p in model.named_parameters()}
    if rotation is not None:
        names.update({p: f"rotation.{name}" for name, p in rotation.named_parameters()})
    return params, names, rotation, torch.optim.Adam(groups, lr=config.lr, weight_decay=config.l2)


def trainable_parameters(model: CLIP, config: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze what the setting keeps fixed and return what it trains."""
    if config.finetune == "lora":
        apply_lora(model, config.lora_rank, config.lora_alpha, config.lora_dropout, config.lora_targets, config.towers)
        return [p for p in model.parameters() if p.requires_grad]
    for p in model.parameters():
        p.requires_grad_(False)
    # Full fine-tuning trains the text tower (and the vision tower with --towers both); the
    # temperature trains with it only with --logit-scale trained (the authors'): it scales both
    # scores of a preference alike, so it moves the loss but cannot change which text wins.
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


def total_steps(config: TrainConfig, train_images: int) -> int:
    """Optimizer steps of the run: epochs of the split (IIT-DAS, joint: of iit_samples triplets), capped by max_steps."""
    # An IIT-DAS epoch is iit_samples triplets (two rows each, one-way) drawn on from the shuffled rows.
    steps_per_epoch = math.ceil(rows_per_epoch(config, train_images) / config.batch_size)
    total = steps_per_epoch * config.epochs
    return total if config.max_steps is None else min(total, config.max_steps)


def batch_loss(run: Run, rows: torch.Tensor) -> torch.Tensor:
    """:func:`step_loss` on this process's share of the global batch ``rows``, weighted by that share.

    Summed over the processes, these are the loss and gradient of the global batch (see distributed.py).
    """
    local = distributed.shard(rows)
    if not len(local):
        return torch.zeros((), device=run.device)
    with run.autocast():
        images = run.rows.image[local]  # (b,) the rows' images in the training split
        caption_base = None if run.rows.caption_base is None else run.rows.caption_base[local].to(run.device)
        image = batch_images(run.model, run.train, images, run.config, run.device)
        descriptions, captions = run.train.descriptions[images].to(run.device), run.train.captions[images].to(run.device)
        loss = step_loss(run.model, run.rotation, run.config, image, descriptions, captions, caption_base)
        return loss * (len(local) / len(rows))


def batch_images(model: CLIP, split: Split, rows: torch.Tensor, config: TrainConfig, device: str) -> torch.Tensor:
    """Image features of the batch: cached ones, or (with --towers both) fresh from the vision tower."""
    if config.towers == "text":
        return split.image_features[rows].to(device)
    resolution = model.config.image_resolution
    pixels = torch.stack([preprocess(load_image(split.examples[i].image_path), resolution) for i in rows.tolist()])
    return model.encode_image(pixels.to(device)).float()


def optimizer_step(run: Run, step: int, loss: float) -> bool:
    """Adam's step on the summed gradients; True if fp16's gradient scaler skipped it."""
    if run.scaler is None:
        stop_if_not_finite(step, loss, run.params, run.names, run.config, run.saved_step)
        run.optimizer.step()
        return False
    # The scaler skips a step whose gradients overflowed fp16 and lowers its scale; that happens
    # now and then, so it is counted, not fatal.
    scale = run.scaler.get_scale()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return run.scaler.get_scale() < scale


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


def record_step(progress: checkpoint.Progress, step: int, loss: float, skipped: bool, seconds: float, bar) -> None:
    progress.step = step
    progress.skipped_steps += int(skipped)
    if not skipped:  # a skipped step's loss, often inf or nan, stays out of the averages
        progress.losses.append(loss)
    progress.step_times.append(seconds)
    bar.update(1)
    if progress.losses:
        bar.set_postfix(loss=f"{statistics.fmean(progress.losses[-20:]):.3f}")


def evaluate(run: Run, step: int) -> None:
    """Log one evaluation to metrics.jsonl, and keep the step's tensors if Appendix C selects it so far."""
    model, progress, config = run.model, run.progress, run.config
    model.eval()
    if config.towers == "both":
        refresh_image_features(model, [run.val, run.test], run.tasks, run.device, run.autocast)
    f1 = transfer_f1(model, run.tasks, config.prompt, run.device, run.autocast)
    losses = progress.losses[-config.eval_every:]
    record = dict(step=step, loss=statistics.fmean(losses) if losses else None,
                  val_accuracy=split_accuracy(model, run.val, run.device, run.autocast),
                  test_accuracy=split_accuracy(model, run.test, run.device, run.autocast), transfer_f1=f1,
                  transfer_score=transfer_score(f1, run.before["transfer_f1"]), skipped_steps=progress.skipped_steps)
    progress.metrics.append(record)
    append_jsonl(run.out / "metrics.jsonl", record)
    run.best = selected.keep_if_selected(run.out, progress, record, run.before["transfer_f1"], model, run.rotation,
                                         config.trade_off_a, run.best)
    model.train()


def save_checkpoint(run: Run, step: int) -> None:
    """Write checkpoint.pt (the main process); every process notes the step for its error messages."""
    if run.main:
        run.progress.wall_s = time.perf_counter() - run.started
        checkpoint.save(run.out, run.about, run.progress, run.model, run.rotation, run.optimizer, run.scaler, run.order,
                        selected=run.best)
    run.saved_step = step


def finish(run: Run) -> dict:
    """Measure the trained model on the test split and the transfer tasks; write the adapters and summary.json."""
    if not run.main:
        distributed.barrier()  # wait for the main process to finish
        return {}
    config, progress, before = run.config, run.progress, run.before
    run.model.eval()
    if config.towers == "both":
        refresh_image_features(run.model, [run.test], run.tasks, run.device, run.autocast)
    after = measure(run.model, run.test, run.tasks, config, run.device, run.autocast)
    accuracy, f1 = after["accuracy"], after["transfer_f1"]
    wall = time.perf_counter() - run.started
    save_run(run.out, run.model, run.rotation, config)
    summary = dict(
        objective=config.objective, finetune=config.finetune, toy=config.toy, steps=progress.step, wall_s=round(wall, 2),
        step_time_s=statistics.median(progress.step_times) if progress.step_times else None,
        concadia_accuracy_before=before["accuracy"], concadia_accuracy=accuracy,
        transfer_f1_before=before["transfer_f1"], transfer_f1=f1, transfer_score=transfer_score(f1, before["transfer_f1"]),
        test_images=len(run.test.examples), train_images=len(run.train.examples),
        skipped_steps=progress.skipped_steps, resumes=progress.resumes, processes=distributed.world_size(),
        **selected.selected_summary(progress),
    )
    write_json(run.out / "summary.json", summary)
    print(f"after {progress.step} steps: test preference accuracy {before['accuracy']:.3f} -> {accuracy:.3f}, "
          f"transfer F1 {fmt(f1)}, transfer score {rounded(summary['transfer_score'])}")
    if summary["selected_step"] is not None:
        print(f"selected step {summary['selected_step']} (Appendix C, a = {config.trade_off_a}): validation accuracy "
              f"{summary['selected_val_accuracy']:.3f}, test accuracy {summary['selected_test_accuracy']:.3f}, "
              f"transfer score {rounded(summary['selected_transfer_score'])}; eval.py --run uses it (--step last: the last)")
    print(f"wrote {run.out / 'summary.json'}")
    distributed.barrier()
    return summary
