"""One training run's settings: TrainConfig, the paper's defaults and the toy world's, and their checks.

Every default lives here once. ``train.py`` maps its flags onto TrainConfig's fields; a field
left at ``None`` takes the paper's setting (Appendix B) from PAPER_DEFAULTS, or on the toy world
the setting from TOY_DEFAULTS, when :func:`defaults` fills it in. :func:`check` refuses a
setting that cannot run before anything is loaded, :func:`check_against_model` what the loaded
model cannot take; the code behind them assumes valid settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..data.transfer import PROMPTS
from ..model import CLIPConfig

OBJECTIVES = ("clip", "behavioral", "iit-das", "joint")
IIT_OBJECTIVES = ("iit-das", "joint")  # the objectives with an intervention and a rotation


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means: the default for this objective and setting (see defaults())."""

    objective: str = "behavioral"  # clip (contrastive pretraining), behavioral (Eq. 1), iit-das (Eq. 2-3), joint (Eq. 5)
    finetune: str = "lora"  # lora: train low-rank adapters only; full: train every text-tower weight (clip: always full)
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
    overwrite: bool = False  # replace the run already in --out (see clip_min.train.runlock)
    trade_off_a: float = 0.9  # a in Appendix C's a * accuracy + (1 - a) * transfer score, which selects the step

    @property
    def toy(self) -> bool:
        return self.weights is None and self.data is None


# The paper's settings, Appendix B. "all" holds what every objective shares: the intervention at
# text block 10 of 12 with k = 256 of 512 rotated coordinates, 10 epochs. Its LoRA search starts
# from "the best configuration for full-finetuning" and varies only rank, dropout and targets,
# so LoRA keeps the full fine-tuning learning rates. Evaluating every 500 steps is ours.
PAPER_DEFAULTS = {
    "all": dict(layer=10, intervention_size=256, epochs=10, eval_every=500),
    ("behavioral", "full"): dict(lr=5e-7, lora_rank=64),
    ("behavioral", "lora"): dict(lr=5e-7, lora_rank=64),
    ("iit-das", "full"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("iit-das", "lora"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("joint", "full"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("joint", "lora"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),
    ("clip", "full"): dict(lr=1e-5, lora_rank=64),
}
# The toy world's settings, over the paper's: one epoch, at rates picked by hand while building
# it, low enough that zero-shot colour naming survives. The intervention sits at the toy text
# tower's second-to-last block with half its width, as 10 of 12 and 256 of 512 do in the paper
# (toy_site). An IIT-DAS epoch is one pass over the toy training split (2,368 triplets):
# 100,000 would be 42 passes, far past where the toy converges. The behavioral LoRA rank is the
# paper's 64; the paper's IIT-DAS rank of 128 does not fit the toy's 64-wide layers, so IIT-DAS and
# joint take 64 too, at 3e-4, the best validation accuracy of 1e-4, 2e-4 and 3e-4 at that rank.
TOY_DEFAULTS = {
    "all": dict(epochs=1, eval_every=50),
    ("behavioral", "full"): dict(lr=3e-5),
    ("behavioral", "lora"): dict(lr=3e-4),
    ("iit-das", "full"): dict(lr=3e-5),
    ("iit-das", "lora"): dict(lr=3e-4, lora_rank=64),
    ("joint", "full"): dict(lr=3e-5),
    ("joint", "lora"): dict(lr=3e-4, lora_rank=64),
    ("clip", "full"): dict(lr=2e-3, epochs=24),
}


def toy_site(text_layers: int, text_width: int) -> dict:
    """The toy world's intervention site: the second-to-last text block, half the width."""
    return dict(layer=text_layers - 2, intervention_size=text_width // 2)


def defaults(config: TrainConfig, text_layers: int, text_width: int) -> TrainConfig:
    """Fill the ``None`` fields of ``config`` with the paper's (or the toy world's) settings."""
    key = (config.objective, config.finetune)
    chosen = {**PAPER_DEFAULTS["all"], **PAPER_DEFAULTS[key]}
    if config.toy:
        chosen.update(toy_site(text_layers, text_width), **TOY_DEFAULTS["all"])
        chosen.update(TOY_DEFAULTS[key])
        chosen.pop("iit_samples", None)
    filled = {name: value for name, value in chosen.items() if getattr(config, name) is None}
    config = replace(config, **filled)
    if config.lora_alpha is None:
        config = replace(config, lora_alpha=float(config.lora_rank))
    if config.rotation_lr is None and config.objective in IIT_OBJECTIVES:
        config = replace(config, rotation_lr=config.lr)
    return replace(config, checkpoint_every=config.checkpoint_every or config.eval_every)


def check(config: TrainConfig) -> None:
    """Refuse settings that cannot run, naming the setting and what it may be."""
    choices = dict(objective=OBJECTIVES, finetune=("lora", "full"), lora_targets=("qv", "attn", "all-linear"),
                   towers=("text", "both"), amp=("auto", "bf16", "fp16", "off"), prompt=tuple(PROMPTS))
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)!r}: use one of {', '.join(allowed)}")
    if config.objective == "clip" and config.finetune == "lora":
        raise ValueError("--objective clip --finetune lora: pretraining trains every weight; use --finetune full")
    for name in ("lora_rank", "batch_size", "epochs", "max_steps", "eval_every", "checkpoint_every", "iit_samples"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("lr", "rotation_lr"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if config.objective not in IIT_OBJECTIVES:
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
        if config.overwrite:
            raise ValueError("--resume with --overwrite: a resumed run goes on, it replaces nothing; drop one of them")
        if Path(config.resume).resolve() != Path(config.out).resolve():
            raise ValueError(f"--resume {config.resume} with --out {config.out}: a resumed run goes on in its own folder; "
                             "drop --out")


def check_against_model(config: TrainConfig, shape: CLIPConfig) -> None:
    """Refuse what the loaded model cannot take: a rank above a layer's width, a block or a k it lacks."""
    text_layers, text_width = shape.text_layers, shape.text_width
    widths = [text_width] + ([shape.vision_width] if config.towers == "both" else [])
    if config.finetune == "lora" and config.lora_rank > min(widths):
        raise ValueError(f"--lora-rank {config.lora_rank} is more than the adapted layers' width {min(widths)}; "
                         f"a rank above it adds nothing, use at most {min(widths)}")
    if config.objective in IIT_OBJECTIVES:
        if not 0 <= config.layer < text_layers:
            raise ValueError(f"--layer {config.layer}: the text tower has blocks 0 to {text_layers - 1}")
        if not 1 <= config.intervention_size <= text_width:
            raise ValueError(f"--intervention-size {config.intervention_size}: k is 1 to the text width {text_width}")
