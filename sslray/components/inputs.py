"""From a data source's batch to a model's input, and a frozen trunk's features of a whole source.

:func:`batch_inputs` is the one step every consumer of a :class:`~sslray.data.source.Batch` makes:
its uint8 views on the device as floats in [0, 1], the declared views cut from the stored images
when the source left them uncut (``Batch.cut``), channels-last. :func:`scan_features` runs a frozen
trunk (eval mode: batch-norm running statistics, no gradient) over every image of a source once, in
index order, and yields each batch with its pooled per-layer features: the pass ClusterFit's
assignment and any streamed evaluation make, never holding a split's features at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..data.source import Batch, Source
from ..data.views import CENTRE, View
from ..models import pooled_taps
from .augment import cut_views


def batch_inputs(batch: Batch, views: Sequence[View], device) -> list[torch.Tensor]:
    """The batch's views on ``device``: float in [0, 1], cut to ``views`` if the batch is uncut, channels-last."""
    xs = [v.to(device).float().div_(255) for v in batch.views]
    if not batch.cut:
        xs = cut_views(xs[0], views)
    return [x.contiguous(memory_format=torch.channels_last) for x in xs]


@torch.no_grad()
def scan_features(trunk, source: Source, layers: Sequence[str], feature_dim: int, device=None,
                  batch_size: int = 256, view: View | None = None) -> Iterator[tuple[Batch, dict[str, torch.Tensor]]]:
    """``(batch, {layer: (B, D) float on device})`` for every batch of ``source.scan``, the trunk in
    eval mode (its mode restored after), the images seen through ``view`` (default the centre view)."""
    device = device or next(trunk.parameters()).device
    view = view or CENTRE.at(source.image_size)
    was = trunk.training
    trunk.eval()
    try:
        for batch in source.scan(batch_size, [view]):
            x, = batch_inputs(batch, [view], device)
            yield batch, pooled_taps(trunk, x, layers, feature_dim)
    finally:
        trunk.train(was)
