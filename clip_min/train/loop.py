"""Fine-tuning CLIP to prefer descriptions (Eq. 1), with IIT-DAS (Eqs. 2-4) or both (Eq. 5).

LoRA, and the authors' full fine-tuning, train the text tower only: every image's features are
computed once (``clip_min.train.features``) and each step runs the text tower on the batch's
captions and descriptions; the paper's full fine-tuning trains the vision tower too
(``towers="both"``), which encodes the batch's images at every step. The file reads top to
bottom: the objective on one batch (:func:`step_loss`), then the loop (:func:`finetune`): set
up, or resume, in one call (``clip_min.train.setup.start_or_resume``), then step by step a
batch, its loss, backward and Adam's step, and at intervals (:func:`evaluates_after`)
:func:`evaluate` and :func:`save_checkpoint`; :func:`finish` measures the end. It writes into
the run folder:

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
from functools import partial
from pathlib import Path

import torch
from torch.nn.utils import parametrize
from tqdm import tqdm

from . import checkpoint, distributed, selected
from ..images import load_image, preprocess
from ..intervention import interchange_features, one_way_features
from ..losses import behavioral_loss, iit_loss, iit_loss_rows, joint_loss, score
from ..metrics import transfer_score
from ..model import CLIP
from ..rotation import Rotation
from ..sorted_parts import in_sorted_parts
from .config import TrainConfig
from .evaluation import Split, fmt, measure, refresh_image_features, rounded, split_accuracy, transfer_f1
from .folder import append_jsonl, save_run, write_json
from .rows import rows_per_epoch
from .setup import Run, start_or_resume

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
    with parametrize.cached():  # R computed once for all the parts, not once a part
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
    with parametrize.cached():  # R computed once for all the parts
        features = in_sorted_parts(swap, base, source)
    base_f, source_f, patched_f = (t.float() for t in features)
    c_base, c_source = score(image, base_f, logit_scale), score(image, source_f, logit_scale)
    l_iit = iit_loss_rows(c_base=c_base, c_base_with_source=score(image, patched_f, logit_scale), caption_base=caption_base)
    if config.objective == "iit-das":
        return l_iit
    c_cap, c_des = torch.where(caption_base, c_base, c_source), torch.where(caption_base, c_source, c_base)
    return joint_loss(l_iit=l_iit, l_behavioral=behavioral_loss(c_cap=c_cap, c_des=c_des), a=config.joint_alpha)


def finetune(config: TrainConfig, weights: Path, data: Path, tasks: list[str]) -> dict:
    """Fine-tune ``weights`` on the Concadia folder ``data``; return the summary (also written to disk).

    Under torchrun every process runs this; the main one returns the summary, the others {}.
    """
    run = start_or_resume(config, weights, data, tasks)
    config, model, optimizer, progress = run.config, run.model, run.optimizer, run.progress
    train_images, main = len(run.batches.split.examples), distributed.is_main()
    total, per_epoch = total_steps(config, train_images), steps_per_epoch(config, train_images)
    if main and not progress.metrics:
        evaluate(run, 0)
    model.train()
    # As a context, the bar is closed before an error is printed, so the error gets a line of its own.
    with tqdm(total=total, initial=progress.step, desc=f"training ({config.objective}, {config.finetune})",
              unit="step", disable=not main) as bar:
        while progress.step < total:
            tick = time.perf_counter()
            step = progress.step + 1
            rows = run.batches.next()  # the global batch, the same in every process
            optimizer.zero_grad(set_to_none=True)
            loss = batch_loss(run, rows)  # step_loss on this process's share of the batch
            if loss.requires_grad:  # a process whose share of a short last batch is empty has nothing to do
                (loss if run.scaler is None else run.scaler.scale(loss)).backward()
            loss = distributed.sum_gradients(trained(optimizer), loss).item()  # summed: the global batch's
            skipped = optimizer_step(run, step, loss)
            record_step(progress, step, loss, skipped, time.perf_counter() - tick, bar)
            evaluating = evaluates_after(step, config, per_epoch) or step == total
            saving = step % config.checkpoint_every == 0 or step == total
            if main and evaluating:
                evaluate(run, step)
            if saving:
                save_checkpoint(run, step)
            if evaluating or saving:
                distributed.barrier()  # the other processes wait for the main one
    return finish(run)


def steps_per_epoch(config: TrainConfig, train_images: int) -> int:
    """Optimizer steps of one epoch: the split (IIT-DAS, joint: iit_samples triplets) in batches, the last one short."""
    # An IIT-DAS epoch is iit_samples triplets (two rows each, one-way) drawn on from the shuffled rows.
    return math.ceil(rows_per_epoch(config, train_images) / config.batch_size)


def total_steps(config: TrainConfig, train_images: int) -> int:
    """Optimizer steps of the run: its epochs, capped by max_steps."""
    total = steps_per_epoch(config, train_images) * config.epochs
    return total if config.max_steps is None else min(total, config.max_steps)


def evaluates_after(step: int, config: TrainConfig, per_epoch: int) -> bool:
    """Whether the run is evaluated after optimizer step ``step`` (counted from 1; step 0 and the last always are).

    ``eval_schedule`` "run" (clip_min's) counts the run's steps: N, 2N, 3N, ... with N = eval_every.
    "epoch" is the authors' trainer.py, whose fit evaluates after the batch whose batch_num, counted
    from 0 in each epoch, is a multiple of N: the first batch of every epoch, then every N-th.
    A function of the step alone, so a resumed run evaluates where the uninterrupted run did.
    """
    if config.eval_schedule == "epoch":
        batch_num = (step - 1) % per_epoch
        return batch_num % config.eval_every == 0
    return step % config.eval_every == 0


def batch_loss(run: Run, rows: torch.Tensor) -> torch.Tensor:
    """:func:`step_loss` on this process's share of the global batch ``rows``, weighted by that share.

    Summed over the processes, these are the loss and gradient of the global batch (see distributed.py).
    """
    local = distributed.shard(rows)
    if not len(local):
        return torch.zeros((), device=run.device)
    split, training_rows = run.batches.split, run.batches.rows
    with run.autocast():
        images = training_rows.image[local]  # (b,) the rows' images in the training split
        caption_base = None if training_rows.caption_base is None else training_rows.caption_base[local].to(run.device)
        image = batch_images(run.model, split, images, run.config, run.device)
        descriptions, captions = split.descriptions[images].to(run.device), split.captions[images].to(run.device)
        loss = step_loss(run.model, run.rotation, run.config, image, descriptions, captions, caption_base)
        return loss * (len(local) / len(rows))


def batch_images(model: CLIP, split: Split, rows: torch.Tensor, config: TrainConfig, device: str) -> torch.Tensor:
    """Image features of the batch: cached ones, or (with --towers both) fresh from the vision tower."""
    if config.towers == "text":
        return split.image_features[rows].to(device)
    resolution = model.config.image_resolution
    pixels = torch.stack([preprocess(load_image(split.examples[i].image_path), resolution) for i in rows.tolist()])
    return model.encode_image(pixels.to(device)).float()


def trained(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """What the optimizer trains: the adapters (or the tower), then the rotation."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def optimizer_step(run: Run, step: int, loss: float) -> bool:
    """Adam's step on the summed gradients; True if fp16's gradient scaler skipped it."""
    if run.scaler is None:
        names = {p: name for name, p in run.model.named_parameters()}
        if run.rotation is not None:
            names.update({p: f"rotation.{name}" for name, p in run.rotation.named_parameters()})
        stop_if_not_finite(step, loss, trained(run.optimizer), names, run.config, run.record.saved_step)
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
    model, progress, config, data, record = run.model, run.progress, run.config, run.evaluation, run.record
    model.eval()
    if config.towers == "both":
        refresh_image_features(model, [data.val, data.test], data.tasks, run.device, run.autocast)
    f1 = transfer_f1(model, data.tasks, config.prompt, run.device, run.autocast)
    losses = progress.losses[-config.eval_every:]
    metrics = dict(step=step, loss=statistics.fmean(losses) if losses else None,
                   val_accuracy=split_accuracy(model, data.val, run.device, run.autocast),
                   test_accuracy=split_accuracy(model, data.test, run.device, run.autocast), transfer_f1=f1,
                   transfer_score=transfer_score(f1, data.before["transfer_f1"]), skipped_steps=progress.skipped_steps)
    progress.metrics.append(metrics)
    append_jsonl(record.out / "metrics.jsonl", metrics)
    record.best = selected.keep_if_selected(record.out, progress, metrics, data.before["transfer_f1"], model, run.rotation,
                                            config.trade_off_a, record.best)
    model.train()


def save_checkpoint(run: Run, step: int) -> None:
    """Write checkpoint.pt (the main process); every process notes the step for its error messages."""
    record = run.record
    if distributed.is_main():
        run.progress.wall_s = time.perf_counter() - record.started
        checkpoint.save(record.out, record.about, run.progress, run.model, run.rotation, run.optimizer, run.scaler,
                        run.batches.order, selected=record.best)
    record.saved_step = step


def finish(run: Run) -> dict:
    """Measure the trained model on the test split and the transfer tasks; write the adapters and summary.json."""
    if not distributed.is_main():
        distributed.barrier()  # wait for the main process to finish
        return {}
    config, progress, data, out = run.config, run.progress, run.evaluation, run.record.out
    before = data.before
    run.model.eval()
    if config.towers == "both":
        refresh_image_features(run.model, [data.test], data.tasks, run.device, run.autocast)
    after = measure(run.model, data.test, data.tasks, config.prompt, run.device, run.autocast)
    accuracy, f1 = after["accuracy"], after["transfer_f1"]
    wall = time.perf_counter() - run.record.started
    save_run(out, run.model, run.rotation, config)
    summary = dict(
        objective=config.objective, finetune=config.finetune, toy=config.toy, steps=progress.step, wall_s=round(wall, 2),
        step_time_s=statistics.median(progress.step_times) if progress.step_times else None,
        concadia_accuracy_before=before["accuracy"], concadia_accuracy=accuracy,
        transfer_f1_before=before["transfer_f1"], transfer_f1=f1, transfer_score=transfer_score(f1, before["transfer_f1"]),
        test_images=len(data.test.examples), train_images=len(run.batches.split.examples),
        skipped_steps=progress.skipped_steps, resumes=progress.resumes, processes=distributed.world_size(),
        **selected.selected_summary(progress),
    )
    write_json(out / "summary.json", summary)
    print(f"after {progress.step} steps: test preference accuracy {before['accuracy']:.3f} -> {accuracy:.3f}, "
          f"transfer F1 {fmt(f1)}, transfer score {rounded(summary['transfer_score'])}")
    if summary["selected_step"] is not None:
        print(f"selected step {summary['selected_step']} (Appendix C, a = {config.trade_off_a}): validation accuracy "
              f"{summary['selected_val_accuracy']:.3f}, test accuracy {summary['selected_test_accuracy']:.3f}, "
              f"transfer score {rounded(summary['selected_transfer_score'])}; eval.py --run uses it (--step last: the last)")
    print(f"wrote {out / 'summary.json'}")
    distributed.barrier()
    return summary
