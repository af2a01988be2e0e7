r"""LoRA (Hu et al. 2021): train a low-rank update beside each frozen weight.

A frozen weight W (out x in) gets a learned update of rank r,

    h = W x + b + \frac{\alpha}{r} B A \, \mathrm{dropout}(x),    A \in R^{r x in},  B \in R^{out x r},

with A drawn like a linear layer's weight and B = 0, so that at step 0 the model is the
pretrained one (names and initialisation as in microsoft/LoRA's loralib). The paper updates
CLIP's text tower this way; the authors' code uses peft with ``lora_alpha = r`` (scaling 1),
which is our default.

OpenAI's attention keeps q, k and v in one fused ``in_proj_weight`` (3 width x width). peft
adapts HF's separate ``q_proj``, ``k_proj``, ``v_proj``, each with its own rank-r update, so here
each adapted slice of the fused weight gets its own :class:`LoRABranch` too
(:class:`InProjLoRA`, plugged into ``MultiheadAttention.in_proj_lora``).

Merging B A into W for inference is an explicit call (:func:`merge_lora`), safe to repeat and
undone by :func:`unmerge_lora`; it never happens behind ``.train()`` or ``.eval()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_min.model import CLIP, MLP, MultiheadAttention

TARGETS = ("qv", "attn", "all-linear")
TOWERS = ("text", "both")


@dataclass(frozen=True)
class LoRAConfig:
    """Where LoRA goes and how big it is (the paper's choices are clip_min.train.config's defaults)."""

    rank: int  # r, the rank of B A
    alpha: float | None = None  # the update is scaled by alpha / r; None means alpha = r, as in the authors' peft config
    dropout: float = 0.0  # dropout on the input of the LoRA branch only; the frozen path never drops
    targets: str = "attn"  # "qv": q and v; "attn": q, k, v and out_proj; "all-linear": attn plus the MLP's c_fc and c_proj
    towers: str = "text"  # "text": the text transformer only (the paper); "both": the vision transformer too

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be an integer >= 1, got {self.rank!r}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 or None (meaning alpha = rank), got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {', '.join(map(repr, TARGETS))}, got {self.targets!r}")
        if self.towers not in TOWERS:
            raise ValueError(f"towers must be one of {', '.join(map(repr, TOWERS))}, got {self.towers!r}")

    @property
    def scaling(self) -> float:
        """alpha / r, the factor in front of B A."""
        return (self.rank if self.alpha is None else self.alpha) / self.rank


class LoRABranch(nn.Module):
    """The low-rank path (alpha / r) B A dropout(x) beside one frozen weight W (out x in)."""

    def __init__(self, in_features: int, out_features: int, config: LoRAConfig, like: torch.Tensor):
        super().__init__()
        factory = {"device": like.device, "dtype": like.dtype}
        self.r = config.rank
        self.scaling = config.scaling
        self.lora_A = nn.Parameter(torch.empty(config.rank, in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(out_features, config.rank, **factory))
        self.lora_dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        # A gets nn.Linear's default init (as loralib does); B = 0 makes B A = 0 at step 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in) -> (..., out): (alpha / r) B A dropout(x), never forming the out x in matrix."""
        return F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        r"""\Delta W = (alpha / r) B A, shaped like the frozen weight (out x in)."""
        return (self.lora_B @ self.lora_A) * self.scaling


class LoRALinear(nn.Linear):
    """A frozen nn.Linear plus a :class:`LoRABranch`: y = x (W + (alpha / r) B A)^T + b.

    The frozen ``weight`` and ``bias`` are the original layer's own Parameters under their
    original names, so the checkpoint keys of the frozen model do not change.
    """

    def __init__(self, base: nn.Linear, config: LoRAConfig):
        # "meta" skips allocating and initialising weights that are replaced on the next line.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight = base.weight
        self.bias = base.bias
        self.lora = LoRABranch(base.in_features, base.out_features, config, like=base.weight)
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        # While merged, W already holds (alpha / r) B A; adding the branch would count it twice.
        return y if self.merged else y + self.lora(x)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + (alpha / r) B A, once."""
        if not self.merged:
            self.weight += self.lora.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - (alpha / r) B A, once, undoing :meth:`merge` up to float rounding."""
        if self.merged:
            self.weight -= self.lora.delta_weight().to(self.weight.dtype)
            self.merged = False


class InProjLoRA(nn.Module):
    """LoRA on slices of the fused q/k/v projection: one rank-r branch per adapted slice.

    ``in_proj_weight`` stacks [W_q; W_k; W_v] (each width x width). Slice s in ("q", "k", "v")
    gets its own branch, stored as the attribute ``s``; its output fills third s of the fused
    (B, L, 3 width) output and the other thirds stay zero.
    """

    SLICES = ("q", "k", "v")

    def __init__(self, width: int, slices: tuple[str, ...], config: LoRAConfig, like: torch.Tensor):
        super().__init__()
        self.width = width
        self.slices = slices
        for s in slices:
            self.add_module(s, LoRABranch(width, width, config, like))
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, width) -> the update of the fused projection, (B, L, 3 width)."""
        if self.merged:
            # in_proj_weight already holds the update; a zero scalar broadcasts over (B, L, 3 width).
            return x.new_zeros(())
        parts = {s: getattr(self, s)(x) for s in self.slices}  # each (B, L, width)
        first = next(iter(parts.values()))
        zeros = first.new_zeros(first.shape) if len(parts) < len(self.SLICES) else None
        return torch.cat([parts.get(s, zeros) for s in self.SLICES], dim=-1)  # (B, L, 3 width)

    @torch.no_grad()
    def merge(self, in_proj_weight: torch.Tensor) -> None:
        """Add each slice's (alpha / r) B A into its rows of the fused weight, once."""
        if not self.merged:
            for s in self.slices:
                rows = self._rows(s)
                in_proj_weight[rows] += getattr(self, s).delta_weight().to(in_proj_weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self, in_proj_weight: torch.Tensor) -> None:
        """Subtract what :meth:`merge` added, once."""
        if self.merged:
            for s in self.slices:
                rows = self._rows(s)
                in_proj_weight[rows] -= getattr(self, s).delta_weight().to(in_proj_weight.dtype)
            self.merged = False

    def _rows(self, s: str) -> slice:
        i = self.SLICES.index(s)
        return slice(i * self.width, (i + 1) * self.width)


def apply_lora(
    model: CLIP,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: str = "attn",
    towers: str = "text",
) -> list[str]:
    """Freeze ``model`` and add LoRA branches; returns the names of the modules holding them.

    Every existing parameter stops requiring grad; only the new lora_A / lora_B do. Modules are
    found by type (MultiheadAttention, MLP), not by name. A q/k/v slice is named after its branch
    (``transformer.resblocks.0.attn.in_proj_lora.q``), a linear layer after itself
    (``transformer.resblocks.0.attn.out_proj``). With a :class:`LoRAConfig` ``c``, call
    ``apply_lora(model, **dataclasses.asdict(c))``.
    """
    config = LoRAConfig(rank, alpha, dropout, targets, towers)
    if any(isinstance(m, LoRABranch) for m in model.modules()):
        raise ValueError("model already has LoRA adapters; apply_lora once per model")
    slices = ("q", "v") if targets == "qv" else InProjLoRA.SLICES
    tower_prefixes = [("transformer", model.transformer)]
    if towers == "both":
        tower_prefixes.append(("visual.transformer", model.visual.transformer))

    model.requires_grad_(False)
    adapted = []
    for prefix, tower in tower_prefixes:
        # Listed before editing: replacing children while named_modules walks them is unsafe.
        for name, module in list(tower.named_modules(prefix=prefix)):
            if isinstance(module, MultiheadAttention):
                module.in_proj_lora = InProjLoRA(tower.width, slices, config, like=module.in_proj_weight)
                adapted += [f"{name}.in_proj_lora.{s}" for s in slices]
                if targets != "qv":
                    module.out_proj = LoRALinear(module.out_proj, config)
                    adapted.append(f"{name}.out_proj")
            elif isinstance(module, MLP) and targets == "all-linear":
                module.c_fc = LoRALinear(module.c_fc, config)
                module.c_proj = LoRALinear(module.c_proj, config)
                adapted += [f"{name}.c_fc", f"{name}.c_proj"]
    return adapted


def merge_lora(model: nn.Module) -> None:
    """W <- W + (alpha / r) B A in every adapted layer; a second call does nothing.

    For inference: a merged forward skips the branches. Save adapters with :func:`lora_state_dict`;
    a full ``state_dict()`` taken while merged holds W + (alpha / r) B A, not the frozen W.
    """
    _for_each_adapter(model, merge=True)


def unmerge_lora(model: nn.Module) -> None:
    """Undo :func:`merge_lora` (up to float rounding); does nothing if not merged."""
    _for_each_adapter(model, merge=False)


def _for_each_adapter(model: nn.Module, merge: bool) -> None:
    for module in model.modules():
        if isinstance(module, LoRALinear):
            module.merge() if merge else module.unmerge()
        elif isinstance(module, MultiheadAttention) and isinstance(module.in_proj_lora, InProjLoRA):
            # The fused weight belongs to the attention module, so it is passed in.
            if merge:
                module.in_proj_lora.merge(module.in_proj_weight)
            else:
                module.in_proj_lora.unmerge(module.in_proj_weight)


def _is_merged(model: nn.Module) -> bool:
    return any(isinstance(m, (LoRALinear, InProjLoRA)) and m.merged for m in model.modules())


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the adapter tensors only (lora_A, lora_B), keyed as in ``model.state_dict()``.

    Copies, so a snapshot taken mid-training (e.g. the best step so far) does not keep changing.
    """
    return {
        f"{name}.{key}": tensor.detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, LoRABranch)
        for key, tensor in module.state_dict().items()
    }


def load_lora_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load adapter tensors saved by :func:`lora_state_dict` into a model given the same :func:`apply_lora`."""
    own = {
        f"{name}.{key}": param
        for name, module in model.named_modules()
        if isinstance(module, LoRABranch)
        for key, param in module.named_parameters()
    }
    if not own:
        raise ValueError("model has no LoRA adapters; call apply_lora with the saved settings first")
    missing = sorted(own.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(
            f"LoRA state dict does not match the model's adapters ({len(missing)} missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); "
            "apply_lora with the same targets and towers as when it was saved"
        )
    for key, param in own.items():
        if state_dict[key].shape != param.shape:
            raise ValueError(
                f"{key} has shape {tuple(state_dict[key].shape)} in the state dict but "
                f"{tuple(param.shape)} in the model; apply_lora with the rank it was saved with"
            )
    # A merged weight holds the old B A: take it out, load, and put the new one in.
    merged = _is_merged(model)
    unmerge_lora(model)
    with torch.no_grad():
        for key, param in own.items():
            param.copy_(state_dict[key])
    if merged:
        merge_lora(model)
