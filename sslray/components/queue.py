"""MoCo's negative queue and momentum (EMA) encoder update (He et al. 2020, sec. 3.2).

The queue holds the K most recent keys, oldest overwritten first; keys of every rank are
gathered before they are enqueued so that all ranks hold the same queue and K means K whatever
the worker count. Queue and pointer are buffers: they checkpoint with the model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather


class KeyQueue(nn.Module):
    """A first-in first-out queue of ``size`` unit-norm keys of ``dim`` values."""

    def __init__(self, size: int, dim: int = 128):
        super().__init__()
        self.size, self.dim = size, dim
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"

    def snapshot(self) -> torch.Tensor:
        """The current keys as a copy (a later enqueue must not change a graph that used them)."""
        return self.keys.clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Append the keys of the global batch (gathered from all ranks), overwriting the oldest."""
        keys = gather(keys.detach().to(self.keys.dtype))[-self.size :]
        slots = (self.ptr + torch.arange(len(keys), device=self.keys.device)) % self.size
        self.keys[slots] = keys
        self.ptr.copy_((self.ptr + len(keys)) % self.size)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters take no gradient (a momentum or teacher encoder)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter (MoCo eq. 2).
    Buffers are left alone: the target's BN statistics come from its own forward passes."""
    for po, pt in zip(online.parameters(), target.parameters()):
        pt.lerp_(po.detach(), 1 - momentum)
