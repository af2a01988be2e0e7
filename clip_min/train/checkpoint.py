"""Checkpoints: everything a fine-tuning run needs to go on exactly where it stopped.

``train.py`` writes ``checkpoint.pt`` into the run folder every ``--checkpoint-every`` steps and at
the end; ``train.py --resume RUN`` continues from it. On one CPU a run killed at any step and
resumed ends with the same adapters and metrics, bit for bit, as the run that never stopped,
because the checkpoint holds every input of the remaining steps:

    trainable   the tensors being trained: LoRA's A and B (or, fine-tuning fully, the text
                tower's weights), the frozen ones being the base weights' own
    rotation    the DAS rotation (IIT-DAS and joint runs)
    optimizer   Adam's moments and step counts
    scaler      the fp16 gradient scaler's scale and growth tracker
    order       the data order: the batch generator, this epoch's permutation, the place in it
    rng         python's, numpy's, torch's and CUDA's generators (LoRA dropout draws from torch's)
    progress    the step, metrics.jsonl's records, every step's loss and time, the wall time,
                the selected step and its trade-off
    selected    the selected step's tensors (``clip_min.train.selected``), to rewrite selected.pt on resume
    run         the resolved configuration, the base's fingerprint, the training split's digest
                (records and image bytes) and what was measured before training

A checkpoint is only plain tensors, dicts, lists, numbers and strings, so it loads with
``torch.load(weights_only=True)``, which never runs code from the file. It is written to a
temporary file beside the old one and renamed over it, so a crash at any moment leaves the
previous checkpoint whole. torch.load notices a truncated file but not changed bytes inside a
tensor, so a SHA-256 of the contents is saved with them and checked on reading.

A run is resumed with the command line that started it. Only the fields in MAY_CHANGE may differ:
they say how long to train, how often to report, and where; any other difference would make the
resumed run another experiment, so it is refused and the differing fields are named.

A run stopped before its first checkpoint (killed while loading, or while writing it) has only
its config.json, and perhaps the checkpoint of an earlier run it replaces (``--overwrite``).
``--resume`` goes on with it from step 0, checked against that config.json as it would be
against a checkpoint. The plain command refuses the folder, which holds a run; were --resume to
refuse it too, each refusal would send the user to the other.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..files import UnreadableFile, atomic_save, load_tensors
from ..weights import MAX_WEIGHTS_BYTES
from .config import as_recorded
from .folder import claim
from .runs import read_run_config

NAME = "checkpoint.pt"
FORMAT = 2  # bump when the contents change (2: the selected step's tensors)
# TrainConfig fields a resumed run may change: e.g. --max-steps or --epochs to train longer.
MAY_CHANGE = ("out", "resume", "epochs", "max_steps", "eval_every", "checkpoint_every", "device")
# The way on from a checkpoint that cannot be resumed.
START_AGAIN = "start the run again with its command and --overwrite, or with another --out"
# A checkpoint holds the trained tensors four times at most (themselves, Adam's two moments, the
# selected step's copy), and they are never more than the model.
MAX_CHECKPOINT_BYTES = 4 * MAX_WEIGHTS_BYTES


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why, in one line."""


class BatchOrder:
    """The training batches: a permutation of the rows from one seeded generator, cut into batches.

    ``reshuffle``: a fresh permutation each pass over the rows (clip_min's), or the first one read
    again in every pass (the authors', whose trainer.py shuffles the data once and then reads it
    with shuffle_train=False). Its state (the generator, this pass's permutation and the place in
    it) is checkpointed, so a resumed run sees the very batches the uninterrupted run would have seen.
    """

    def __init__(self, n: int, batch_size: int, seed: int, reshuffle: bool = True):
        self.n, self.batch_size, self.reshuffle = n, batch_size, reshuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.permutation: torch.Tensor | None = None  # (n,) row indices of this pass
        self.position = 0  # rows of this pass's permutation already used

    def next(self) -> torch.Tensor:
        """Row indices of the next global batch, (batch_size,) or fewer at the end of a pass."""
        if self.permutation is None or (self.reshuffle and self.position == self.n):
            self.permutation = torch.randperm(self.n, generator=self.generator)
        if self.position == self.n:
            self.position = 0
        rows = self.permutation[self.position:self.position + self.batch_size]
        self.position += len(rows)
        return rows

    def state_dict(self) -> dict:
        return dict(generator=self.generator.get_state(), permutation=self.permutation, position=self.position)

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.permutation, self.position = state["permutation"], state["position"]


@dataclass
class Progress:
    """What the loop has done so far. A checkpoint carries it, so a resumed run reports the whole run."""

    step: int = 0  # optimizer steps taken (an fp16 step the scaler skipped counts: its batch was used)
    metrics: list[dict] = field(default_factory=list)  # the records of metrics.jsonl so far
    losses: list[float] = field(default_factory=list)  # each step's loss on its global batch (fp16 skipped steps left out)
    step_times: list[float] = field(default_factory=list)  # seconds of each step
    skipped_steps: int = 0  # fp16 steps the gradient scaler skipped for inf or nan gradients
    wall_s: float = 0.0  # seconds in the training loop, summed over the sessions of the run
    resumes: int = 0  # how many times the run was resumed
    selected_step: int | None = None  # the evaluation with the best Appendix C trade-off so far
    selected_score: float | None = None  # its trade-off


def rng_state() -> dict:
    """The state of every global random number generator, as plain tensors, lists and numbers."""
    version, mt, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return dict(
        python=dict(version=version, state=list(mt), gauss_next=gauss_next),
        numpy=dict(keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos), has_gauss=int(has_gauss),
                   cached_gaussian=float(cached_gaussian)),
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state() if cuda else None,  # this process's GPU
    )


def set_rng_state(state: dict) -> None:
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(folder: Path, run: dict, progress: Progress, model: torch.nn.Module, rotation: torch.nn.Module | None,
         optimizer: torch.optim.Optimizer, scaler, order: BatchOrder, selected: dict | None = None) -> None:
    """Write ``folder/checkpoint.pt`` atomically; ``run`` holds the configuration and the numbers before training."""
    state = dict(
        format=FORMAT,
        run=run,
        progress=asdict(progress),
        trainable={name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad},
        rotation=None if rotation is None else {k: v.detach().cpu() for k, v in rotation.state_dict().items()},
        optimizer=optimizer.state_dict(),
        scaler=None if scaler is None else scaler.state_dict(),
        order=order.state_dict(),
        rng=rng_state(),
        selected=selected,
    )
    state["sha256"] = digest(state)
    atomic_save(state, claim(Path(folder) / NAME))


def read(folder: Path, run_config: dict, weights_id: str) -> dict | None:
    """The checkpoint of the run in ``folder``, checked whole and taken with ``run_config`` (up to MAY_CHANGE).

    None when the run has no checkpoint yet: it goes on from step 0. A checkpoint.pt of another
    configuration than config.json's is an earlier run's, which ``--overwrite`` replaced with this
    one before this one wrote its first: it stays until this run's replaces it.
    """
    recorded = read_run_config(folder)
    saved, saved_id = as_recorded({k: v for k, v in recorded.items() if k != "weights_id"}), recorded.get("weights_id")
    path = Path(folder) / NAME
    state = load(path) if os.path.lexists(path) else None
    if state is None or config_changes(state["run"]["config"], saved) or saved_id not in (None, state["run"]["weights_id"]):
        check_same_run(folder, saved, saved_id, run_config, weights_id)
        print(f"note: {folder} has no {NAME} of this run yet (it stopped before its first); it starts again from "
              "step 0, with the configuration its config.json records")
        return None
    check_same_run(folder, state["run"]["config"], state["run"]["weights_id"], run_config, weights_id)
    return state


def load(path: Path) -> dict:
    """``checkpoint.pt``, checked to be whole and laid out as :func:`save` writes it."""
    try:
        state = load_tensors(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    except UnreadableFile as err:
        raise CheckpointError(f"{err}; nothing was changed") from None
    except Exception as err:  # a damaged zip or pickle surfaces as many exception types
        raise CheckpointError(f"{path} is truncated or damaged ({type(err).__name__}: it cannot be read); nothing was "
                              f"changed: restore a copy of it, or {START_AGAIN}") from None
    if not isinstance(state, dict) or "sha256" not in state:
        raise CheckpointError(f"{path} is not a clip_min checkpoint; nothing was changed: {START_AGAIN}")
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {state.get('format')!r}, this clip_min reads format {FORMAT}; "
                              f"resume it with the clip_min that wrote it, or {START_AGAIN}")
    if state.pop("sha256") != digest(state):
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum saved with them; nothing "
                              f"was changed: restore a copy of it, or {START_AGAIN}")
    # The checksum shows the file is whole, not that clip_min wrote it: anyone can compute one.
    run, progress = state.get("run"), state.get("progress")
    if not (isinstance(run, dict) and isinstance(run.get("config"), dict) and isinstance(run.get("train_images"), int)
            and isinstance(progress, dict) and set(progress) <= {f.name for f in fields(Progress)}
            and isinstance(state.get("trainable"), dict) and all(isinstance(t, torch.Tensor) for t in state["trainable"].values())
            and all(isinstance(state.get(part), dict) for part in ("optimizer", "order", "rng"))):
        raise CheckpointError(f"{path} is not laid out as clip_min writes a checkpoint (run, progress, trainable, "
                              f"optimizer, order, rng); nothing was changed: {START_AGAIN}")
    return state


def check_same_run(folder: Path, saved: dict, saved_id: str | None, run_config: dict, weights_id: str) -> None:
    """Refuse a resume whose configuration (outside MAY_CHANGE) or base weights differ from those the run recorded."""
    changes = config_changes(saved, run_config)
    if changes:
        raise CheckpointError(f"--resume {folder}: the run was started with another configuration ({'; '.join(changes)}); "
                              f"a resumed run may change only {', '.join('--' + n.replace('_', '-') for n in MAY_CHANGE)}")
    if saved_id is not None and saved_id != weights_id:  # (a config.json from before the fingerprint has none)
        raise CheckpointError(f"--resume {folder}: the base weights {run_config['weights']} changed since the run started "
                              "(their contents differ); resume with the file the run started from")


def config_changes(saved: dict, now: dict) -> list[str]:
    """Fields outside MAY_CHANGE whose values differ, as '--flag was X, now Y'."""
    # --overwrite says how the run took its folder, not what it trains (and a resume cannot take it).
    saved = as_recorded(saved)  # a checkpoint from before the recipes trained as the paper's recipe does
    names = sorted((saved.keys() | now.keys()) - set(MAY_CHANGE) - {"overwrite"})
    return [f"--{name.replace('_', '-')} was {saved.get(name)!r}, now {now.get(name)!r}"
            for name in names if saved.get(name) != now.get(name)]


def check_train_data(state: dict, n: int, train_id: str | None) -> None:
    """Refuse data whose training split changed: the saved permutation indexes into it, and the run learned from it.

    ``train_id`` is evaluation.split_digest of the split now (None: not computed);
    checkpoints from before it was kept have only the count to compare.
    """
    saved = state["run"]["train_images"]
    if saved != n:
        raise CheckpointError(f"the training split has {n} usable images now and had {saved} when the run started; "
                              "resume with the data the run started with")
    saved_id = state["run"].get("train_id")
    if train_id is not None and saved_id is not None and saved_id != train_id:
        raise CheckpointError("the training split is not the one the run started with (its records or images "
                              "changed, though their number did not); resume with the data the run started with")


def restore(state: dict, model: torch.nn.Module, rotation: torch.nn.Module | None, optimizer: torch.optim.Optimizer,
            scaler, order: BatchOrder) -> Progress:
    """Put the checkpoint back into the run's objects; return its Progress.

    Call it just before the first step: building the model (LoRA, the rotation) draws random
    numbers, and the generators must be in their checkpointed state when training goes on.
    """
    own = {name: p for name, p in model.named_parameters() if p.requires_grad}
    saved = state["trainable"]
    wrong = [name for name in own if name not in saved or saved[name].shape != own[name].shape] + sorted(saved.keys() - own.keys())
    if wrong:
        raise CheckpointError(f"{NAME}: its trained tensors do not fit this run's model (first {wrong[0]}); "
                              f"the checkpoint is damaged or from another run: {START_AGAIN}")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(saved[name])
    if rotation is not None:
        rotation.load_state_dict(state["rotation"])
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    order.load_state_dict(state["order"])
    set_rng_state(state["rng"])
    progress = Progress(**state["progress"])
    progress.resumes += 1
    return progress


def digest(obj) -> str:
    """SHA-256 of a nest of dicts, lists, tuples, tensors and plain values: dtypes, shapes and bytes."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"dict {len(obj)};".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__} {len(obj)};".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"{obj!r};".encode())
