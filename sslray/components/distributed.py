"""Where a process runs (:func:`default_device`, :class:`DistContext`) and collectives that are
no-ops in a single process: gather a batch's tensors from every rank.

Memory banks, queues and in-batch negatives must mean the same with 1 or 64 workers: each rank
sees only its shard of the global batch, so anything that stores or contrasts against "the
batch" first gathers it. All ranks hold equal-sized shards (the shared loop guarantees it).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


def default_device() -> torch.device:
    """This process's accelerator (the current CUDA device), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_context() -> DistContext:
    """This process's rank, world size and device (rank 0 of 1 outside ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), default_device())
    return DistContext(device=default_device())


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order (no gradient): ``(world * N, ...)``."""
    if not is_distributed():
        return x
    x = x.contiguous()
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x)
    return torch.cat(out)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Like :func:`gather`, but gradients flow back to every rank's ``x`` (SimCLR negatives)."""
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of a private API; still the documented autograd gather
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated", category=FutureWarning)
        return torch.cat(all_gather(x.contiguous()))
