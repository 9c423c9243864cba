"""Data parallelism for the training loop: ``torchrun`` start-up and gradient all-reduce.

Gloo on CPU (tests, 2 processes on one machine), NCCL on CUDA with one GPU per local rank.
Every helper is a no-op in a single process, so method code never branches on the world size.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["init_distributed", "dist_info", "all_reduce_mean", "sync_grads", "broadcast_modules",
           "broadcast_buffers",
           "barrier"]


def init_distributed(device: str) -> tuple[int, int, str]:
    """Initialise ``torch.distributed`` when launched by torchrun (WORLD_SIZE > 1).

    Returns (rank, world_size, device); on CUDA the device becomes ``cuda:<LOCAL_RANK>``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if str(device).startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over ranks, in place (``t`` itself when there is one process)."""
    world = dist_info()[1]
    if world > 1:
        dist.all_reduce(t)
        t /= world
    return t


def sync_grads(modules: list[nn.Module]) -> None:
    """Average the gradients of ``modules`` over ranks in one flat all-reduce, then replace
    NaN/inf by finite values (as NVlabs' training loop does), so one bad step cannot poison
    Adam's moments."""
    params = [p for m in modules for p in m.parameters() if p.grad is not None]
    if not params:
        return
    if dist_info()[1] > 1:
        flat = all_reduce_mean(torch.cat([p.grad.flatten() for p in params]))
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))
    for p in params:
        torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


def broadcast_modules(modules: list[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every rank (start and resume)."""
    if dist_info()[1] <= 1:
        return
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            dist.broadcast(t.data, src=0)


def broadcast_buffers(modules: list[nn.Module]) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank, as DDP's
    ``broadcast_buffers=True`` does before each forward: each rank updates them from its own
    shard of the batch, and without this the ranks' models drift apart."""
    if dist_info()[1] <= 1:
        return
    for m in modules:
        for b in m.buffers():
            dist.broadcast(b.data, src=0)


def barrier() -> None:
    if dist_info()[1] > 1:
        dist.barrier()
