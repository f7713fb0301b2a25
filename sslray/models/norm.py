"""The trunk's normalisation layers (``trunk.norm``): batch norm, group norm, and the sub-batch
batch norm behind MoCo's shuffling BN.

- ``batch``: ``nn.BatchNorm2d`` (Ioffe & Szegedy 2015), statistics over the whole batch the trunk sees.
- ``group``: ``nn.GroupNorm`` (Wu & He 2018) with 32 groups, or the largest divisor of a layer's
  channels below 32 where it has fewer (a 1/8-width ResNet-18's 8-channel stem gets 8 groups);
  statistics per image, so no image's output depends on another's.
- ``shuffle_batch``: :class:`SubBatchNorm2d`, batch norm whose training statistics are taken per
  sub-batch. He et al. 2020 (MoCo, sec. 3.3) found that a query and its positive key normalised with
  the same batch statistics leak information that lets the model "cheat" the pretext task; they
  shuffle the key batch across GPUs so that each GPU's BN sees a random subset. A contrastive
  method runs its trunk through :func:`sslray.components.shuffle.shuffled`, which permutes the batch
  (across workers when there are several, in which case each worker's batch is one sub-batch; on
  one worker in ``trunk.norm_splits`` sub-batches, as MoCo's one-GPU code does) and undoes the
  permutation on the output. Anywhere else (evaluation, fine-tuning) it is plain batch norm.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "group", "shuffle_batch")
#: Wu & He 2018's default number of groups
GROUPS = 32


def group_count(channels: int, most: int = GROUPS) -> int:
    """The largest divisor of ``channels`` that is at most ``most``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


class SubBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` that, in training with ``splits > 1``, normalises each of ``splits``
    contiguous sub-batches with its own mean and variance; the running statistics move towards
    the average of the sub-batches' (as MoCo's ``SplitBatchNorm``). Parameters and buffers are
    ``BatchNorm2d``'s, so its state dict is a batch-norm trunk's."""

    splits: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits <= 1 or len(x) < 2 * self.splits:
            return super().forward(x)
        chunks = x.tensor_split(self.splits)
        out = torch.cat([F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps) for c in chunks])
        if self.track_running_stats:
            with torch.no_grad():
                stats = [torch.var_mean(c.float(), dim=(0, 2, 3), unbiased=True) for c in chunks]
                var = torch.stack([s[0] for s in stats]).mean(0)
                mean = torch.stack([s[1] for s in stats]).mean(0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(var.to(self.running_var.dtype), self.momentum)
                self.num_batches_tracked.add_(1)
        return out


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """``channels -> normalisation module`` for ``trunk.norm``."""
    if kind == "batch":
        return nn.BatchNorm2d
    if kind == "group":
        return lambda c: nn.GroupNorm(group_count(c), c)
    if kind == "shuffle_batch":
        return SubBatchNorm2d
    raise ValueError(f"unknown norm {kind!r}; known: {', '.join(NORMS)}")


@contextmanager
def sub_batches(module: nn.Module, splits: int):
    """Within the block, every :class:`SubBatchNorm2d` of ``module`` normalises ``splits`` sub-batches."""
    layers = [m for m in module.modules() if isinstance(m, SubBatchNorm2d)]
    for m in layers:
        m.splits = splits
    try:
        yield
    finally:
        for m in layers:
            m.splits = 1
