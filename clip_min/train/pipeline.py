"""What ``train.py`` runs: the paper's setting with real weights and data, or the toy world."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from . import distributed
from ..data.concadia import read_concadia
from ..data.transfer import task_layout
from ..files import UnreadableFile, atomic_write_text, check_output, read_text_whole, read_whole
from ..weights import check_vocabulary, load_weights
from .pretrain import TOY_CAPTION_WEIGHT, TOY_CONFIG, pretrain
from .toybase import toy_base
from .folder import claim, remove_stale, write_metrics_csv
from .rows import check_against_data
from .runlock import check_run_folder, move_aside, own_run_folder
from ..data.toy import make_toy_world, toy_world_dir
from .config import TrainConfig, check, check_against_model, defaults
from .device import resolve_device
from .loop import finetune

TOY_BANNER = """\
clip_min: no --weights and --data given, so this runs on the TOY WORLD: a small generated
Concadia-like data set and a small CLIP pretrained on it, to watch the method work on a CPU.
For the paper's setting: python train.py --weights ViT-B-32.pt --data path/to/concadia ..."""


def toy_world() -> tuple[Path, list[str]]:
    """The toy world's Concadia folder and transfer task folders, generated on first use."""
    world = make_toy_world(toy_world_dir())
    tasks = sorted(str(p) for p in (world / "transfer").iterdir() if p.is_dir())
    return world, tasks


def run(config: TrainConfig) -> dict:
    """Check the configuration, get the weights and data, and train; return the run's summary.

    Under torchrun each process calls this; they join up here, and only the main one prints.
    """
    check(config)
    if distributed.launched() and config.objective == "clip":
        raise ValueError("--objective clip trains in one process (its contrastive loss spans the whole batch); "
                         "start it without torchrun")
    inputs = [("--weights", config.weights), ("--data", config.data), ("--images", config.images),
              *(("--transfer", folder) for folder in config.transfer)]
    if config.toy:
        inputs.append(("the toy world", toy_world_dir()))
    check_output(config.out, "--out", inputs)
    keep_earlier = check_run_folder(config.out, config.resume is not None, config.overwrite)
    distributed.init(resolve_device(config.device))
    try:
        main = distributed.is_main()
        with distributed.quiet_unless_main():
            prepared = prepare(config)  # before the run folder is touched: a refused command leaves it as it was
        if main and keep_earlier:
            print(f"note: the earlier run in {config.out} (the default --out) is kept as {move_aside(config.out)}, "
                  f"and {config.out} is this run's; pass --out to name a run's folder")
        # The main process writes the run folder, so it owns it for the whole run (clip_min.train.runlock).
        with distributed.quiet_unless_main(), own_run_folder(config.out) if main else nullcontext():
            summary = _run(prepared)
            if main:
                if config.objective != "clip":  # pretraining logs no evaluations to draw
                    picture_run(Path(config.out), config.trade_off_a)
                remove_stale(Path(config.out))
            return summary
    finally:
        distributed.close()


@dataclass(frozen=True)
class Prepared:
    """A run's inputs, found and checked: the configuration with every default filled in."""

    config: TrainConfig
    weights: Path | None  # the base; None: pretraining the toy world's CLIP from scratch
    data: Path  # the Concadia folder
    tasks: list[str]  # the transfer task folders


def prepare(config: TrainConfig) -> Prepared:
    """Find the base and the data (making the toy world's on first use), and check every flag against them.

    This runs before the run folder is created or touched. The base is read here for its shape
    alone (the rank, block and k it can take) and read again by the run; the training split is
    counted (the batch and the IIT-DAS triplets it can fill), and each transfer folder must be in
    a known layout.
    """
    if config.toy:
        print(TOY_BANNER)
        with distributed.node_main_first():  # the first process builds the toy world and base; the others find them
            world, toy_tasks = toy_world()
            weights = None if config.objective == "clip" else toy_base(world)
        data, tasks = world / "concadia", list(config.transfer) or toy_tasks
    else:
        weights, data, tasks = Path(config.weights), Path(config.data), list(config.transfer)
    if weights is None:
        shape = TOY_CONFIG
    else:
        model, _ = load_weights(weights, "cpu")
        check_vocabulary(model, weights)
        shape = model.config
        del model
    config = defaults(config, shape.text_layers, shape.text_width)
    check_against_model(config, shape)
    check_against_data(config, len(read_concadia(data, "train", config.images)[0]))
    for folder in tasks:
        task_layout(folder)
    return Prepared(config, weights, data, tasks)


def _run(prepared: Prepared) -> dict:
    config, weights, data, tasks = prepared.config, prepared.weights, prepared.data, prepared.tasks
    if config.objective == "clip":
        toy = dict(caption_weight=TOY_CAPTION_WEIGHT) if config.toy else {}
        return pretrain(config, weights, data, tasks, **toy)
    return finetune(config, weights, data, tasks)


def picture_run(out: Path, a: float) -> None:
    """A finished fine-tuning run's curves as a picture (curves.png) and its evaluations as a table (metrics.csv).

    ``a`` is the run's Appendix C trade-off, so the step marked is the one it selected.
    """
    from ..report.figures import figure_run
    from ..report.selection import MAX_METRICS_BYTES, read_run

    logged = read_text_whole(out / "metrics.jsonl", MAX_METRICS_BYTES, "metrics.jsonl")
    table = write_metrics_csv(out, [json.loads(line) for line in logged.splitlines() if line.strip()])
    picture = figure_run(read_run(out, a), claim(out / "curves.png"))
    print(f"wrote {picture} (accuracy and transfer F1 over training, the selected step marked) and {table}")


# Commands that train many runs (eval.py table, eval.py search) leave in each run folder a stamp
# holding the request that started it; run again after a stop, they keep the finished runs.
def given(options: dict) -> dict:
    """A request's options without a --recipe left unset, so stamps from before the recipes still match."""
    return {name: value for name, value in options.items() if not (name == "recipe" and value is None)}


def mark_full(finetune: str) -> dict:
    """What a full fine-tuning request adds: before the recipes set --towers, it trained the text tower
    alone (now the paper's trains both), so a stamp without the mark is of a run to train again."""
    return {"towers": "by recipe"} if finetune == "full" else {}


def finished(config: TrainConfig, request: str, stamp_name: str) -> bool:
    """Whether ``config.out`` holds a finished run that the same ``request`` started."""
    folder = Path(config.out)
    stamp = folder / stamp_name
    if not ((folder / "summary.json").is_file() and stamp.is_file()):
        return False
    try:
        return read_whole(stamp, len(request.encode()), "request stamp") == request.encode()
    except UnreadableFile:  # longer than the request, or unreadable: not this request's, so the run is done again
        return False


def run_stamped(config: TrainConfig, request: str, stamp_name: str) -> dict:
    """:func:`run`, then the stamp that :func:`finished` looks for.

    The command owns these folders: an unfinished run of an earlier request is replaced (--overwrite).
    """
    summary = run(replace(config, overwrite=True))
    atomic_write_text(claim(Path(config.out) / stamp_name), request)
    return summary
