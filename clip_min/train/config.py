"""One training run's settings: TrainConfig, the two recipes' defaults and the toy world's, and their checks.

Every default lives here once. ``train.py`` maps its flags onto TrainConfig's fields; a field
left at ``None`` takes its recipe's setting when :func:`defaults` fills it in: AUTHORS_DEFAULTS
(the authors' released runs, the default with real weights and data) or PAPER_DEFAULTS (the
paper's text, Appendix B; the default on the toy world), and on the toy world TOY_DEFAULTS over
either. docs/12-two-recipes.md lists where the two differ. :func:`check` refuses a
setting that cannot run before anything is loaded, :func:`check_against_model` what the loaded
model cannot take; the code behind them assumes valid settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.transfer import PROMPT_CHOICES
from ..model import CLIPConfig
from ..rotation import ORTHOGONAL_MAPS

OBJECTIVES = ("clip", "behavioral", "iit-das", "joint")
IIT_OBJECTIVES = ("iit-das", "joint")  # the objectives with an intervention and a rotation
RECIPES = ("authors", "paper")
# random_state of the authors' fixed draws: the IIT-DAS triplets (run_iit_clip.py) and the 5,000
# validation images (finetune_clip.py, run_iit_clip.py), the same for every seed.
SAMPLE_SEED = 42


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means: the default for this objective and setting (see defaults())."""

    recipe: str | None = None  # authors (the released runs) or paper (Appendix B's text); None: authors on real data, paper on the toy world
    objective: str = "behavioral"  # clip (contrastive pretraining), behavioral (Eq. 1), iit-das (Eq. 2-3), joint (Eq. 5)
    finetune: str = "lora"  # lora: train low-rank adapters only; full: every weight of the trained towers (clip: always full)
    lora_rank: int | None = None  # r; paper: 64 behavioral, 128 IIT-DAS; authors: 128 behavioral, 64 IIT-DAS
    lora_alpha: float | None = None  # scaling = alpha / r; the authors set alpha = r
    lora_dropout: float = 0.0  # dropout on the adapter's input
    lora_targets: str = "attn"  # qv, attn (q, k, v, out) or all-linear (attention and MLP)
    towers: str | None = None  # text: vision tower frozen, its features cached; both: it trains too, encoding every step
    layer: int | None = None  # text block whose output the intervention edits; paper: 10 of 12
    intervention_size: int | None = None  # k, rotated coordinates swapped; paper: 256 of 512
    joint_alpha: float = 0.5  # a in Eq. 5: weight of the IIT loss
    lr: float | None = None  # Adam learning rate
    rotation_lr: float | None = None  # the DAS rotation's learning rate (IIT-DAS, joint); None: the same as lr
    l2: float = 0.0  # L2 penalty (Adam weight_decay); paper: 0
    epochs: int | None = None  # passes over the training split (IIT-DAS, joint: of iit_samples triplets); paper: 10
    iit_samples: int | None = None  # IIT-DAS, joint: (image, caption, description) triplets per epoch; paper: 100,000; None: the training split
    max_steps: int | None = None  # stop after this many optimizer steps, whatever the epochs
    batch_size: int | None = None  # rows per step: images with their caption and description, or one-way IIT rows (iit_rows)
    iit_rows: str | None = None  # pairs: a row is one image, both directions of Eqs. 2-3; one-way: a row is one direction
    triplets: str | None = None  # IIT-DAS, joint: stream (reshuffled split) or fixed (one draw with replacement, SAMPLE_SEED)
    val_images: int | None = None  # validation images drawn once with SAMPLE_SEED; 0: the whole split
    logit_scale: str | None = None  # full fine-tuning: the temperature fixed, or trained with the towers
    orthogonal_map: str | None = None  # how the rotation is computed from its free parameter (clip_min.rotation)
    shuffle: str | None = None  # every-epoch: a new permutation of the rows each epoch; once: one, read in every epoch
    seed: int = 0  # seeds data order, initialisation of adapters and rotation
    amp: str | None = None  # auto: bf16 (or fp16) on CUDA, off on CPU; bf16; fp16; off (fp32 everywhere)
    device: str = "auto"  # auto: cuda if available, else cpu
    weights: str | None = None  # OpenAI or Hugging Face CLIP weights; None: the toy world's base
    data: str | None = None  # Concadia folder; None: the toy world
    images: str | None = None  # Concadia's image folder if not DATA/resized
    transfer: tuple[str, ...] = ()  # transfer task folders (Food-101, CIFAR-100 or ImageNet layout); default: the toy tasks
    prompt: str | None = None  # zero-shot prompts: paper, photo, picture (transfer.PROMPTS) or authors (per task, raw names)
    out: str = "runs/latest"  # run folder
    eval_every: int | None = None  # evaluate every N steps (and at the start and end)
    eval_schedule: str | None = None  # run: after steps N, 2N, ... of the run; epoch: after batches 0, N, 2N, ... of each epoch
    checkpoint_every: int | None = None  # write checkpoint.pt every N steps and at the end; None: every eval_every
    resume: str | None = None  # go on with the run in this folder from its checkpoint.pt (see checkpoint.MAY_CHANGE)
    overwrite: bool = False  # replace the run already in --out (see clip_min.train.runlock)
    trade_off_a: float = 0.9  # a in Appendix C's a * accuracy + (1 - a) * transfer score, which selects the step

    @property
    def toy(self) -> bool:
        return self.weights is None and self.data is None


# "All the parameters of CLIP are trained" (the paper's full fine-tuning).
ALL_OF_CLIP = dict(towers="both", logit_scale="trained")
# The paper's text, Appendix B. "all" holds what every objective shares: the intervention at
# text block 10 of 12 with k = 256 of 512 rotated coordinates, 10 epochs, batches of 12. Its LoRA
# search starts from "the best configuration for full-finetuning" and varies only rank, dropout
# and targets, so LoRA keeps the full fine-tuning learning rates. The paper leaves open what a
# batch of 12 counts; ours are 12 images, each with its caption and description (and both
# directions of Eqs. 2-3). Ours too, where the text says nothing: evaluating after every 500 steps
# of the run, a new permutation of the rows every epoch, bf16 autocast on CUDA, the stream of
# triplets, the whole validation split, the Cayley map (the paper says only "orthogonal"; Cayley is
# cheaper). Full fine-tuning trains "all the parameters of CLIP": both towers, so the images are
# encoded at every step, and the temperature; LoRA adapts the text tower, its temperature fixed.
PAPER_DEFAULTS = {
    "all": dict(layer=10, intervention_size=256, epochs=10, eval_every=500, batch_size=12,  # Appendix B
                iit_rows="pairs", triplets="stream", val_images=0, orthogonal_map="cayley",  # ours
                eval_schedule="run", shuffle="every-epoch", amp="auto",  # ours
                towers="text", logit_scale="fixed",  # LoRA's: ours, the paper does not say which tower it adapts
                prompt="paper"),  # the paper's transfer prompt, "An image of ___"
    ("behavioral", "full"): dict(lr=5e-7, lora_rank=64, **ALL_OF_CLIP),  # Appendix B: lr 0.5e-6
    ("behavioral", "lora"): dict(lr=5e-7, lora_rank=64),  # Appendix B: rank 64, full fine-tuning's lr
    ("iit-das", "full"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000, **ALL_OF_CLIP),  # Appendix B; 100,000 triplets
    ("iit-das", "lora"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),  # Appendix B: rank 128
    ("joint", "full"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000, **ALL_OF_CLIP),  # as IIT-DAS
    ("joint", "lora"): dict(lr=1e-5, lora_rank=128, iit_samples=100_000),  # as IIT-DAS
    ("clip", "full"): dict(lr=1e-5, lora_rank=64),  # ours: pretraining is not in the paper
}
# What a run recorded before a field existed did, read back (a resume, a reload) for the fields its
# config.json lacks: a run from before the recipes trained as the paper's recipe did then (its
# full fine-tuning the text tower alone, which config.json's towers records); one from before the
# data order and the schedule were settings reshuffled every epoch and counted steps over the run.
RECORDED_BEFORE = dict(recipe="paper", iit_rows="pairs", triplets="stream", val_images=0, logit_scale="fixed",
                       orthogonal_map="cayley", shuffle="every-epoch", eval_schedule="run")


def as_recorded(config: dict) -> dict:
    """A run's config.json as this version records it: the fields it lacks as RECORDED_BEFORE says."""
    return {**RECORDED_BEFORE, **config}


# The authors' released runs (atticusg/InterchangeInterventions at 231cc5f, the scripts behind
# Table 1). LoRA is peft's with alpha = r on q, k, v and out of the text layers in both recipes.
AUTHORS_DEFAULTS = {
    "all": dict(layer=10, intervention_size=256, epochs=10,  # seeds_das_*.sh: layer 10, size 256; max_iter 10
                eval_every=500, eval_schedule="epoch",  # trainer.py fit: after batch_num % 500 == 0 of each epoch
                shuffle="once",  # create_dataset shuffles once; fit's shuffle_train=False reads that order every epoch
                amp="off",  # trainer.py fit: fp32, no autocast, in training and its evaluations
                iit_rows="one-way", triplets="fixed",  # run_iit_clip.py: one direction per row, one draw for all seeds
                val_images=5000,  # finetune_clip.py, run_iit_clip.py: 5,000 val images, random_state 42
                towers="text", logit_scale="trained",  # full fine-tuning's parameters: the text tower and logit_scale
                orthogonal_map="matrix_exp",  # the rotation: parametrizations.orthogonal with its default map
                prompt="authors"),  # food101.py, imagenet1k.py: "A picture of {}"; cifar100.py: "a photo of a {}"
    ("behavioral", "full"): dict(lr=5e-6, lora_rank=128, batch_size=6),  # seeds_bft_fft.sh; 12 texts = 6 images
    ("behavioral", "lora"): dict(lr=1e-5, lora_rank=128, batch_size=6),  # seeds_bft_lora.sh
    ("iit-das", "full"): dict(lr=1e-5, lora_rank=64, iit_samples=100_000, batch_size=12),  # seeds_das_fft.sh; 12 rows
    ("iit-das", "lora"): dict(lr=1e-5, lora_rank=64, iit_samples=100_000, batch_size=12),  # seeds_das_lora.sh
    ("joint", "full"): dict(lr=1e-5, lora_rank=64, iit_samples=100_000, batch_size=12),  # run_iit_clip.py --multitask_das
    ("joint", "lora"): dict(lr=1e-5, lora_rank=64, iit_samples=100_000, batch_size=12),  # run_iit_clip.py --multitask_das
    # Pretraining is in neither; it is measured with the paper's prompt, which needs no task layout.
    ("clip", "full"): dict(lr=1e-5, lora_rank=64, batch_size=12, prompt="paper"),
}
RECIPE_DEFAULTS = {"authors": AUTHORS_DEFAULTS, "paper": PAPER_DEFAULTS}
# The toy world's settings, over either recipe's: one epoch, at rates picked by hand while building
# it, low enough that zero-shot colour naming survives. The intervention sits at the toy text
# tower's second-to-last block with half its width, as 10 of 12 and 256 of 512 do in the paper
# (toy_site). An IIT-DAS epoch is one pass over the toy training split (2,368 triplets):
# 100,000 would be 42 passes, far past where the toy converges. The LoRA rank is 64 throughout: the
# paper's behavioral 64; the ranks of 128 do not fit the toy's 64-wide layers. IIT-DAS and joint
# LoRA run at 3e-4, the best validation accuracy of 1e-4, 2e-4 and 3e-4 at that rank. The recipe's
# structural choices (what a row and a batch are, the draws, the prompts, the map) still apply.
TOY_DEFAULTS = {
    "all": dict(epochs=1, eval_every=50, lora_rank=64),
    ("behavioral", "full"): dict(lr=3e-5),
    ("behavioral", "lora"): dict(lr=3e-4),
    ("iit-das", "full"): dict(lr=3e-5),
    ("iit-das", "lora"): dict(lr=3e-4),
    ("joint", "full"): dict(lr=3e-5),
    ("joint", "lora"): dict(lr=3e-4),
    ("clip", "full"): dict(lr=2e-3, epochs=12, prompt="paper"),
}


def toy_site(text_layers: int, text_width: int) -> dict:
    """The toy world's intervention site: the second-to-last text block, half the width."""
    return dict(layer=text_layers - 2, intervention_size=text_width // 2)


def default_recipe(config: TrainConfig) -> str:
    """The recipe a run takes without --recipe: the authors' with real data, the paper's on the toy world."""
    return config.recipe or ("paper" if config.toy else "authors")


def recipe_setting(config: TrainConfig, name: str):
    """The setting ``name`` that every objective of ``config``'s recipe shares (its table's "all")."""
    return RECIPE_DEFAULTS[default_recipe(config)]["all"][name]


def defaults(config: TrainConfig, text_layers: int, text_width: int) -> TrainConfig:
    """Fill the ``None`` fields of ``config`` with its recipe's settings (over them, the toy world's)."""
    key = (config.objective, config.finetune)
    recipe = default_recipe(config)
    table = RECIPE_DEFAULTS[recipe]
    chosen = {**table["all"], **table[key], "recipe": recipe}
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


# Fields whose None means "the recipe's setting" (filled by defaults()) rather than a value to check.
NONE_MEANS_DEFAULT = ("prompt", "recipe", "iit_rows", "triplets", "logit_scale", "orthogonal_map", "towers", "amp",
                      "shuffle", "eval_schedule")


def check(config: TrainConfig) -> None:
    """Refuse settings that cannot run, naming the setting and what it may be."""
    choices = dict(objective=OBJECTIVES, finetune=("lora", "full"), lora_targets=("qv", "attn", "all-linear"),
                   towers=("text", "both"), amp=("auto", "bf16", "fp16", "off"), prompt=PROMPT_CHOICES, recipe=RECIPES,
                   iit_rows=("pairs", "one-way"), triplets=("stream", "fixed"), logit_scale=("fixed", "trained"),
                   orthogonal_map=ORTHOGONAL_MAPS, shuffle=("every-epoch", "once"), eval_schedule=("run", "epoch"))
    for name, allowed in choices.items():
        if name in NONE_MEANS_DEFAULT and getattr(config, name) is None:
            continue
        if getattr(config, name) not in allowed:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)!r}: use one of {', '.join(allowed)}")
    if config.objective == "clip" and config.prompt == "authors":
        raise ValueError("--objective clip --prompt authors: pretraining measures one template for every task; "
                         "use --prompt paper, photo or picture")
    if config.val_images is not None and config.val_images < 0:
        raise ValueError(f"--val-images must be 0 (the whole split) or more, got {config.val_images}")
    if config.objective == "clip" and config.finetune == "lora":
        raise ValueError("--objective clip --finetune lora: pretraining trains every weight; use --finetune full")
    for name in ("lora_rank", "batch_size", "epochs", "max_steps", "eval_every", "checkpoint_every", "iit_samples"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    # Every number is finite: an infinite learning rate fails only steps later, as "loss is nan".
    for name in ("lr", "rotation_lr", "lora_alpha", "lora_dropout", "joint_alpha", "l2", "trade_off_a"):
        value = getattr(config, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for name in ("lr", "rotation_lr", "lora_alpha"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 <= config.lora_dropout < 1:
        raise ValueError(f"--lora-dropout is a probability in [0, 1) (1 would drop every input), got {config.lora_dropout}")
    if not 0 <= config.seed < 2**32:
        raise ValueError(f"--seed must be in [0, 2**32) (numpy's generator takes no other), got {config.seed}")
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
    for folder in config.transfer:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--transfer {folder}: no such folder; pass transfer task folders (Food-101, "
                                    "CIFAR-100 or ImageNet layout)")
    if config.resume is not None:
        if config.objective == "clip":
            raise ValueError("--resume: --objective clip (pretraining) writes no checkpoints; the fine-tuning objectives "
                             "resume: start a pretraining run again with its command and --overwrite")
        if not Path(config.resume).is_dir():
            raise FileNotFoundError(f"--resume {config.resume}: no such run folder; pass --resume the --out folder of a "
                                    "train.py run")
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
