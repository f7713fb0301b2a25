"""DistributedDataParallel (as the shared loop wraps a method on several workers) expects a
gradient for every trainable parameter at every step. A multi-task step uses one task's head
only, and a colorization decoder on res4 leaves res5 out; :func:`every_parameter` adds them to
the graph with weight zero, so DDP needs no ``find_unused_parameters`` (and its extra pass)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def every_parameter(loss: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """``loss`` plus zero times one element of each trainable parameter, when distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        return loss
    return loss + 0.0 * sum(p[(0,) * p.dim()] for p in module.parameters() if p.requires_grad)
