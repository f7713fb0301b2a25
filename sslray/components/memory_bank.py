"""A memory bank of one L2-normalised embedding per training image (Wu et al. 2018, sec. 3.2).

NPID and PIRL contrast a batch against representations of *other* images without computing
them: the bank keeps a running average of each image's embedding, ``m_i <- normalise(momentum *
m_i + (1 - momentum) * f_i)``, updated with the batch's embeddings after every step, and
negatives are drawn uniformly from it.

Drawing negatives: the papers' code draws K entries for every row of the batch and gathers a
``(B, K, D)`` tensor, whose memory traffic dominates the step at large K (bench negatives: 9x
at K=32k on a CPU). :meth:`MemoryBank.negative_dots` draws K entries once per step, shared by
the batch, and scores them with one matrix product; a row whose own entry was drawn gets that
column swapped for a fresh draw among the others, so each row's negatives stay uniform over the
N - 1 other images (P = 1/N + 1/N * 1/(N-1) = 1/(N-1)). Only the correlation across rows
changes, as with MoCo's queue, where every row shares the same negatives.

Data-parallel training: each rank sees only its shard of the global batch, so
:meth:`MemoryBank.update` all-gathers the indices and embeddings of every rank before writing.
Every rank's bank then stays identical to a single-process bank fed the global batch, and K
negatives mean K whatever the worker count. The bank is a buffer: it checkpoints with the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import gather


class MemoryBank(nn.Module):
    """``size`` unit vectors of ``dim`` values; ``momentum`` 0.5 as in NPID."""

    def __init__(self, size: int, dim: int = 128, momentum: float = 0.5):
        super().__init__()
        if size < 2:
            raise ValueError(f"a memory bank needs at least 2 entries, got {size}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.size, self.dim, self.momentum = size, dim, momentum
        # random unit vectors: an untrained bank already spreads over the sphere
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, momentum={self.momentum}"

    def get(self, idx: torch.Tensor) -> torch.Tensor:
        """The stored vectors of ``idx`` (a copy: later updates do not change it)."""
        return self.bank[idx]

    def sample(self, idx: torch.Tensor, k: int, exclude_self: bool = True,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``(len(idx), k)`` indices drawn uniformly (with replacement) from the bank; with
        ``exclude_self`` never the row's own index ``idx[i]``."""
        n = len(idx)
        if not exclude_self:
            return torch.randint(0, self.size, (n, k), device=self.bank.device, generator=generator)
        # uniform over the size - 1 other entries: draw from [0, size - 1) and skip over idx[i]
        r = torch.randint(0, self.size - 1, (n, k), device=self.bank.device, generator=generator)
        return r + (r >= idx.to(r.device)[:, None]).long()

    def negatives(self, idx: torch.Tensor, k: int, exclude_self: bool = True) -> torch.Tensor:
        """``(len(idx), k, dim)`` stored vectors of k sampled other images per row."""
        return self.bank[self.sample(idx, k, exclude_self)]

    def negative_dots(self, queries: Sequence[torch.Tensor], idx: torch.Tensor, k: int,
                      shared: bool = True) -> list[torch.Tensor]:
        """``(B, k)`` dot products of each query row with k stored vectors of images other than
        ``idx[i]``, drawn uniformly with replacement; the same draw serves every query.

        ``shared``: one draw of k entries for the whole batch (one matrix product per query);
        otherwise an independent draw per row (a ``(B, k, D)`` gather, as in the papers' code).
        """
        if not shared:
            negatives = self.negatives(idx, k)
            return [torch.einsum("bd,bkd->bk", q, negatives.to(q.dtype)) for q in queries]
        idx = idx.to(self.bank.device)
        drawn = torch.randint(0, self.size, (k,), device=self.bank.device)
        entries = self.bank[drawn]
        # a row's own entry among the drawn: find the few candidate columns first (a (size,) mask
        # instead of comparing the whole (B, k) grid), then the rows they belong to
        own = torch.zeros(self.size, dtype=torch.bool, device=self.bank.device)
        own[idx] = True
        cand = own[drawn].nonzero().squeeze(1)
        rows, hit = (drawn[cand][None, :] == idx[:, None]).nonzero(as_tuple=True)
        cols = cand[hit]
        swap = torch.randint(0, self.size - 1, (len(rows),), device=self.bank.device)
        swap = self.bank[swap + (swap >= idx[rows]).long()]
        out = []
        for q in queries:
            dots = q @ entries.to(q.dtype).T
            if len(rows):
                dots = dots.index_put((rows, cols), (q[rows] * swap.to(q.dtype)).sum(1).to(dots.dtype))
            out.append(dots)
        return out

    @torch.no_grad()
    def update(self, idx: torch.Tensor, features: torch.Tensor) -> None:
        """Move the entries of ``idx`` towards ``features`` (normalised first), then renormalise.

        Under ``torch.distributed`` the indices and features of all ranks are gathered first,
        so every rank applies the same update of the global batch.
        """
        idx = gather(idx.to(self.bank.device))
        feats = gather(F.normalize(features.detach().to(self.bank.dtype), dim=1))
        mixed = self.momentum * self.bank[idx] + (1 - self.momentum) * feats
        self.bank.index_copy_(0, idx, F.normalize(mixed, dim=1))
