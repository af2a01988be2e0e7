"""The step Appendix C selects, kept while training: its trainable state in ``selected.pt``.

Appendix C picks one step per run: the evaluation with the highest

    trade-off = a * validation accuracy + (1 - a) * transfer score,   a = 0.9

(accuracy alone when the run has no transfer tasks). The run scores every evaluation as it is
logged; when one beats the best so far (:func:`beats`: the earliest wins a tie, and step 0, the
untouched model, is never a candidate), the tensors being trained are copied and written to
``selected.pt``:

    step        the selected step
    trainable   {parameter name: tensor} of what the run trains: LoRA's A and B, or (full
                fine-tuning) the tower's weights; the rest are the base weights' own
    rotation    the DAS rotation's state (IIT-DAS and joint runs), else None

The copy also travels in the checkpoint, so a resumed run holds the same best-so-far and selects
exactly as the run that never stopped. ``clip_min.train.runs.load_run`` puts it back on the base weights.
Selection reads the validation split only; the test accuracy logged beside it is what is reported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import atomic_save
from ..metrics import trade_off, transfer_score
from .folder import claim

NAME = "selected.pt"


def selection_score(accuracy: float, f1: dict[str, float], base_f1: dict[str, float], a: float) -> float:
    """Appendix C's trade-off of one evaluation; the accuracy alone when there is no transfer score."""
    transfer = transfer_score(f1, base_f1)
    return accuracy if transfer is None else trade_off(accuracy, transfer, a)


def beats(step: int, score: float, best_score: float | None) -> bool:
    """Appendix C's rule for one evaluation, taken in step order: does it replace the best so far?

    Step 0, the untouched model, is the base of the recovery and never a candidate. A later step
    replaces the best only with a strictly higher trade-off, so the earliest of a tie stays. The
    run (:func:`keep_if_selected`) and the report (``clip_min.report.selection.RunLog.best``) both
    select by this rule, so selected.pt and Table 1 agree.
    """
    return step > 0 and (best_score is None or score > best_score)


def snapshot(step: int, model: torch.nn.Module, rotation: torch.nn.Module | None) -> dict:
    """CPU copies of the trained tensors at ``step``, in the layout of ``selected.pt``."""
    return dict(
        step=step,
        trainable={name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad},
        rotation=None if rotation is None else {k: v.detach().cpu().clone() for k, v in rotation.state_dict().items()},
    )


def write(folder: str | Path, state: dict) -> None:
    """Write ``folder/selected.pt`` atomically: a crash leaves the previous selection whole."""
    atomic_save(state, claim(Path(folder) / NAME))


def put_back(state: dict, model: torch.nn.Module, trained: set[str]) -> None:
    """Copy ``state['trainable']`` into ``model``'s parameters of the same names and shapes.

    ``trained`` names the parameters the run trains: the file must hold exactly those. One left
    out would silently stay at its start; one the run never trains (a base weight, say) would
    silently replace the base's.
    """
    own = dict(model.named_parameters())
    missing = sorted(state["trainable"].keys() - own.keys())
    left_out = sorted(trained - state["trainable"].keys())
    if left_out:
        kind = "LoRA" if all(name.endswith((".lora_A", ".lora_B")) for name in trained) else "trained"
        raise ValueError(f"{len(left_out)} {kind} tensors of the model are not in the file (e.g. {left_out[0]}); "
                         "the run's config.json does not match its selected.pt")
    if missing:
        raise ValueError(f"{len(missing)} selected tensors have no parameter in the model (e.g. {missing[0]}); "
                         "the run's config.json does not match its selected.pt")
    untrained = sorted(state["trainable"].keys() - trained)
    if untrained:
        raise ValueError(f"{len(untrained)} tensors in the file are of parameters the run does not train "
                         f"(e.g. {untrained[0]}); the run's config.json does not match its selected.pt")
    with torch.no_grad():
        for name, tensor in state["trainable"].items():
            if tensor.shape != own[name].shape:
                raise ValueError(f"selected tensor {name} has shape {tuple(tensor.shape)}, the model's "
                                 f"{tuple(own[name].shape)}; the run's config.json does not match its selected.pt")
            own[name].copy_(tensor)


def keep_if_selected(out: Path, progress, record: dict, base_f1: dict, model: torch.nn.Module,
                     rotation: torch.nn.Module | None, a: float, best: dict | None) -> dict | None:
    """Appendix C as the run goes: keep this evaluation's tensors if its trade-off beats the best so far."""
    value = selection_score(record["val_accuracy"], record["transfer_f1"], base_f1, a)
    if not beats(record["step"], value, progress.selected_score):
        return best
    best = snapshot(record["step"], model, rotation)
    write(out, best)
    progress.selected_step, progress.selected_score = record["step"], value
    return best


def selected_summary(progress) -> dict:
    """summary.json's numbers at the selected step, as metrics.jsonl logged them."""
    record = next((r for r in progress.metrics if r["step"] == progress.selected_step), {})
    return dict(selected_step=progress.selected_step, selected_val_accuracy=record.get("val_accuracy"),
                selected_test_accuracy=record.get("test_accuracy"), selected_transfer_f1=record.get("transfer_f1"),
                selected_transfer_score=record.get("transfer_score"))
