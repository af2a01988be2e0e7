r"""Several processes, one run: data-parallel fine-tuning under PyTorch's launcher, ``torchrun``.

    torchrun --nproc_per_node=8 train.py ...

torchrun starts one process per GPU (or per CPU slot) and tells each its place in the
environment (RANK, LOCAL_RANK, WORLD_SIZE, and where to meet). Every process holds the whole
model and the same data order; each takes its share of every global batch of ``--batch-size``
images, and after the backward pass the gradients of the trainable tensors are summed over the
processes, so every process takes the same optimizer step as one process on the whole batch.

Why the sum is that gradient: the paper's losses are means over the batch of per-image terms,
L = (1/B) \sum_i l_i. Process r computes the mean over its B_r images and weights it by its share
B_r / B of the global batch, so \sum_r (B_r / B) (1/B_r) \sum_{i \in r} l_i = L, and since the
gradient is linear, summing the processes' gradients (one all_reduce) gives \nabla L exactly, up
to float rounding. (CLIP's contrastive loss is not such a mean: each image is scored against
every text in the batch, so ``--objective clip`` runs in one process.)

Equal up to rounding is not always close after training: Adam's first steps are about
lr * sign(gradient) per entry, so an entry whose gradient is near zero moves by +-lr as rounding
decides. The DAS rotation has whole directions of zero gradient: the loss sees R only through the
span of its first k columns, so turning R within that span, or within its complement, changes
nothing. There R may drift apart between one process and several, while R_{:, :k} R_{:, :k}^T,
all that the intervention uses, agrees.

This is what DistributedDataParallel does, without the wrapper: DDP overlaps the all_reduce with
the backward pass, which pays off for big gradients; LoRA's are small. Process 0 (the *main*
process) alone evaluates and writes the run folder; the others wait at a barrier meanwhile.
With one process (no torchrun) every function here does nothing, or the obvious thing.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager, nullcontext, redirect_stdout
from datetime import timedelta

import torch
import torch.distributed as dist

# How long a process waits for the others at a barrier or an all_reduce. The main process alone
# encodes every image on a first run (the others then read its cache), which takes a while.
TIMEOUT = timedelta(hours=2)


def launched() -> bool:
    """Whether torchrun started several processes for this run."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> None:
    """Join the other processes (nccl for GPUs, gloo for CPUs), once; nothing without torchrun."""
    if not launched() or dist.is_initialized():
        return
    if torch.device(device).type == "cuda":
        gpu = torch.device("cuda", local_rank())
        torch.cuda.set_device(gpu)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=gpu)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    """This process's number on its own machine (node)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Process 0, which evaluates, logs and writes the run folder."""
    return rank() == 0


def quiet_unless_main():
    """A context in which print() of every process but the main one goes nowhere: one copy is enough."""
    return nullcontext() if is_main() else redirect_stdout(io.StringIO())


def device_for(device: str) -> str:
    """Each process of a node gets its own GPU: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if launched() and device == "cuda":
        return f"cuda:{local_rank()}"
    return device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@contextmanager
def node_main_first():
    """Run the block in each node's first process, then in the others.

    For work that fills a cache on disk (the toy world, the image features): the first process
    does it, the others find it done. Every process calls :func:`barrier` once, so they stay in step.
    """
    if local_rank() != 0:
        barrier()
    yield
    if local_rank() == 0:
        barrier()


def shard(rows: torch.Tensor) -> torch.Tensor:
    """This process's part of a global batch of row indices: (B,) -> (B_r,), B_r = B / world size, near enough."""
    return rows.tensor_split(world_size())[rank()]


def sum_gradients(params: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of ``params``, and ``loss``, over the processes; return the summed loss.

    Packed into one flat buffer so that one all_reduce carries everything. A process whose share
    of the batch was empty (a short last batch) contributes zeros.
    """
    if world_size() == 1:
        return loss
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([loss.detach().float().reshape(1)] + [g.reshape(-1) for g in grads])  # (1 + sum of numel,)
    dist.all_reduce(flat)
    offset = 1
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()
    return flat[0]


@torch.no_grad()
def copy_from_main(tensors: list[torch.Tensor]) -> None:
    """Overwrite ``tensors`` in every process with process 0's values."""
    if dist.is_initialized():
        for t in tensors:
            dist.broadcast(t, src=0)


def from_main(make):
    """``make()`` called in process 0 alone; every process gets its result.

    The result travels pickled between the processes of this one run; use it for plain data.
    """
    if not dist.is_initialized():
        return make()
    box = [make() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
