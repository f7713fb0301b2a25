"""MoCo's shuffling BN (He et al. 2020, sec. 3.3) as a wrapper around a trunk call.

``shuffled(trunk, x)`` is ``trunk(x)`` when the trunk's ``norm`` is not ``shuffle_batch`` or the
trunk is not training. Otherwise the samples are put in a random order before the trunk and back
in theirs after it, so that the batch-norm statistics each sample is normalised with come from a
random subset of the batch, never the same subset for a query and its key (or a view and its
partner):

- on several workers (``torch.distributed``), the batches of all workers are gathered, permuted
  by one permutation (drawn on rank 0, broadcast), each worker runs its share of the permuted
  batch through its trunk with its own batch statistics, and the outputs are gathered back with
  their gradients and unpermuted (MoCo's ``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``;
  here also for a trunk that takes gradients);
- on one worker, the batch is permuted and every batch-norm layer normalises ``trunk.norm_splits``
  sub-batches separately (MoCo's one-GPU ``SplitBatchNorm``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

from ..models import sub_batches
from .distributed import gather, gather_with_grad, rank, world_size


def _apply(out, fn):
    return {k: fn(v) for k, v in out.items()} if isinstance(out, dict) else fn(out)


def shuffled(trunk: torch.nn.Module, x: torch.Tensor, call: Callable | None = None):
    """``call(trunk, x)`` (default ``trunk(x)``: a tensor, or a dict of tensors like ``taps``)
    with shuffling BN when ``trunk.norm == "shuffle_batch"`` and the trunk is training."""
    call = call or (lambda t, v: t(v))
    if getattr(trunk, "norm", "batch") != "shuffle_batch" or not trunk.training:
        return call(trunk, x)
    n, w = len(x), world_size()
    if w == 1:
        perm = torch.randperm(n, device=x.device)
        with sub_batches(trunk, trunk.norm_splits):
            out = call(trunk, x[perm])
        inverse = torch.argsort(perm)
        return _apply(out, lambda y: y[inverse])
    everyone = gather(x)  # (W * N, ...): the images need no gradient
    perm = torch.randperm(w * n, device=x.device)
    dist.broadcast(perm, 0)
    mine = slice(rank() * n, (rank() + 1) * n)
    out = call(trunk, everyone[perm[mine]])
    inverse = torch.argsort(perm)
    return _apply(out, lambda y: gather_with_grad(y)[inverse][mine])
