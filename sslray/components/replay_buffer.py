"""A replay buffer of persistent Markov chains over images (Tieleman 2008, persistent contrastive
divergence; Du & Mordatch 2019, sec. 3.1, its replay buffer): each step continues chains drawn
from the buffer, a share ``reset`` restarted from uniform noise, and writes them back.

Held as a float16 buffer so that it checkpoints with the model that owns it. Every worker holds the
same buffer: the chains of a step are drawn as one set of distinct slots for the global batch
(drawn on rank 0 and broadcast), and written back gathered from every rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .distributed import gather, is_distributed, rank, world_size


class ReplayBuffer(nn.Module):
    """``size`` persistent chains of ``shape`` (images in [0, 1]), started as uniform noise."""

    def __init__(self, size: int, shape: tuple[int, ...], reset: float):
        super().__init__()
        self.size, self.reset = size, reset
        self.register_buffer("chains", torch.rand(size, *shape).half())

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(slots of the global batch, this worker's n chain starts, which starts are fresh noise)``."""
        slots = torch.randperm(self.size, device=self.chains.device)[: n * world_size()]
        if is_distributed():
            dist.broadcast(slots, 0)
        starts = self.chains[slots[rank() * n:(rank() + 1) * n]].float()
        fresh = torch.rand(n, device=starts.device) < self.reset
        return slots, torch.where(fresh[:, None, None, None], torch.rand_like(starts), starts), fresh

    @torch.no_grad()
    def store(self, slots: torch.Tensor, chains: torch.Tensor) -> None:
        """Write every worker's chains back to the slots they were drawn from."""
        self.chains[slots] = gather(chains.detach()).to(self.chains.dtype)
