"""What ``train.py`` runs: the paper's setting with real weights and data, or the toy world."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from . import distributed
from ..files import UnreadableFile, atomic_write_text, check_output, read_whole
from .pretrain import TOY_CAPTION_WEIGHT, pretrain
from .toybase import toy_base
from .runlock import check_run_folder, file_ids, move_aside, own_run_folder, remove_stale
from ..data.toy import make_toy_world, toy_world_dir
from .config import TrainConfig, check
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
        if main and keep_earlier:
            print(f"note: the earlier run in {config.out} (the default --out) is kept as {move_aside(config.out)}, "
                  f"and {config.out} is this run's; pass --out to name a run's folder")
        # The main process writes the run folder, so it owns it for the whole run (clip_min.train.runlock).
        with distributed.quiet_unless_main(), own_run_folder(config.out) if main else nullcontext():
            earlier = file_ids(Path(config.out)) if main and config.overwrite and config.resume is None else {}
            summary = _run(config)
            if earlier:
                remove_stale(Path(config.out), earlier)
            return summary
    finally:
        distributed.close()


def _run(config: TrainConfig) -> dict:
    if not config.toy:
        weights, data, tasks = Path(config.weights), Path(config.data), list(config.transfer)
        if config.objective == "clip":
            return pretrain(config, weights, data, tasks)
        return finetune(config, weights, data, tasks)
    print(TOY_BANNER)
    if config.objective == "clip":
        world, tasks = toy_world()
        return pretrain(config, None, world / "concadia", list(config.transfer) or tasks, caption_weight=TOY_CAPTION_WEIGHT)
    with distributed.node_main_first():  # the first process builds the toy world and base; the others find them
        world, tasks = toy_world()
        base = toy_base(world)
    return finetune(config, base, world / "concadia", list(config.transfer) or tasks)


# Commands that train many runs (eval.py table, eval.py search) leave in each run folder a stamp
# holding the request that started it; run again after a stop, they keep the finished runs.
def given(options: dict) -> dict:
    """A request's options without a --recipe left unset, so stamps from before the recipes still match."""
    return {name: value for name, value in options.items() if not (name == "recipe" and value is None)}


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
    atomic_write_text(Path(config.out) / stamp_name, request)
    return summary
