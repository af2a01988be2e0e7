"""Where and how a run computes: the device, mixed precision, the random seeds."""

from __future__ import annotations

import random
from contextlib import nullcontext
from functools import partial

import numpy as np
import torch


def resolve_device(device: str) -> str:
    """``--device`` as a device this machine has: auto, cpu, cuda, cuda:N or mps; else a one-line error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: PyTorch sees no CUDA GPU on this machine; use --device cpu (or auto)")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: Apple's MPS is not available here; use --device cpu (or auto)")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device}: clip_min runs on cpu, cuda or mps")
    return device


def mixed_precision(amp: str, device: str):
    """The autocast context factory and the gradient scaler (fp16 only) for ``amp`` on ``device``."""
    device_type = torch.device(device).type
    if amp == "auto":
        if device_type != "cuda":
            return nullcontext, None
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "off":
        return nullcontext, None
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    # bf16 keeps float32's exponent range, so only fp16 needs its gradients scaled.
    scaler = torch.amp.GradScaler(device_type) if amp == "fp16" else None
    return partial(torch.autocast, device_type, dtype=dtype), scaler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
