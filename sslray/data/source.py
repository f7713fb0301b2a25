"""The data boundary: a *source* yields batches of a split, and nothing else in the package indexes a
whole split.

A :class:`Batch` holds the views of its images (uint8), their labels and their stable global
indices (``0 .. N-1`` over the split, the same whatever the number of workers: what a memory bank
keys on). Every source serves the same contract for an epoch ``e`` of a run with seed ``s``:

- the order of the epoch depends only on ``(s, e)``;
- the images of every global batch are split evenly over the ranks, so shards are disjoint,
  every rank yields the same number of batches (DDP never waits on a short shard) and each image
  is seen once per epoch (the last incomplete global batch is dropped);
- the global batch means the same whatever the worker count.

Two sources: :class:`MemorySource` (a split held as one tensor: the embedded data, CIFAR-sized
folders) and :class:`~sslray.data.stream.StreamSource` (Ray Data, any size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .imageset import ImageSet
from .views import View


@dataclass
class Batch:
    views: list[torch.Tensor]  # uint8 (B, 3, S, S) each
    labels: torch.Tensor  # int64 (B,)
    index: torch.Tensor  # int64 (B,): stable global index of each image in its split
    cut: bool = True  # False: ``views[0]`` holds the stored images, the views are still to be cut
    corrupt: list[str] = field(default_factory=list)  # unreadable images replaced in this batch (paths)
    #: per-image tensors beyond the views, for the methods that ask for them by name (``Method.needs``):
    #: a clip source's ``clip``, ``audio``, ``track``, ``frame`` (:mod:`sslray.data.clips`)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    #: data.decode=gpu: the images still encoded (``views`` empty) with their views' crop boxes
    #: (int32 ``(B, V, 4)``); the training process decodes and cuts them on its device
    #: (:func:`sslray.data.decode.cut_on_device`)
    encoded: list[bytes] | None = None
    boxes: torch.Tensor | None = None


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``n`` images for epoch ``epoch`` of a run seeded ``seed``."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g)


def steps_per_epoch(n: int, global_batch: int) -> int:
    return max(1, n // global_batch)


def rank_slices(order: torch.Tensor, global_batch: int, rank: int, world: int) -> Iterator[torch.Tensor]:
    """This rank's slice of every full global batch of ``order`` (the last incomplete one dropped;
    a split smaller than one batch yields it whole, once)."""
    if global_batch % world:
        raise ValueError(f"global batch {global_batch} does not split over {world} workers")
    local = global_batch // world
    for b in range(steps_per_epoch(len(order), global_batch)):
        chunk = order[b * global_batch : (b + 1) * global_batch]
        yield chunk[rank * local : (rank + 1) * local]


class Source:
    """What every source tells and serves (see the module docstring)."""

    kind: str = ""  # what resolved.data.source logs: memory or stream
    #: True: the whole split is held in memory (a subset costs nothing, every process loads it from
    #: the data cache); False: it is read while training and may be far larger than memory
    held: bool = False
    split: str = ""
    classes: list[str]
    image_size: int
    #: what this source's batches carry in :attr:`Batch.extra` (see :mod:`sslray.data.clips`)
    offers: tuple[str, ...] = ()
    frames: int = 0  # frames per clip (0: stills)
    sample_rate: int = 0  # Hz of the sound track (0: no sound)
    fps: int = 0  # frames per second of a clip

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def steps(self, global_batch: int, world: int = 1) -> int:
        """Batches per rank and epoch: the same on every rank."""
        return steps_per_epoch(len(self), global_batch)

    def epoch(self, epoch: int, global_batch: int, seed: int, rank: int = 0, world: int = 1,
              views: Sequence[View] = ()) -> Iterator[Batch]:
        raise NotImplementedError

    def scan(self, batch_size: int, views: Sequence[View] = ()) -> Iterator[Batch]:
        """Every image once, in index order, on this process (evaluation, ClusterFit's assignment)."""
        raise NotImplementedError

    def subset(self, n: int | None) -> ImageSet:
        """The first ``n`` images (class-balanced) in memory, at ``image_size``: what the kNN
        monitor, the invariance measures and probes on a stated subset use."""
        raise NotImplementedError

    def channel_stats(self, n: int = 5000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the first ``n`` images (class-balanced), never held together."""
        from .imageset import channel_moments

        return channel_moments(b.views[0] for b in self.scan_first(n))

    def scan_first(self, n: int):
        """Batches of the centre views of the first ``n`` images (class-balanced)."""
        raise NotImplementedError

    @property
    def pipeline_cpus(self) -> float:
        """CPUs this source's pipeline takes per training process while training (0: none)."""
        return 0.0

    def describe(self) -> dict:
        return {"resolved.data.source": self.kind}

    def load(self) -> None:
        """Read what the source holds in memory, if anything (opening a source only lists it)."""


@dataclass
class Pending:
    """A split listed but not yet decoded or generated: what its listing tells (size, classes) and
    how to load it. A source over it checks everything a run needs before a byte is decoded, and
    decodes (writing the data cache) only when its images are first read."""

    n: int
    classes: list[str]
    image_size: int
    split: str
    load: Callable[[], ImageSet]  # picklable (a functools.partial of a module function)
    frames: int = 0
    params: dict = field(default_factory=dict)  # what the listing found, logged with the run


class MemorySource(Source):
    """A split held as one uint8 tensor; views are cut from its square images on the device. Over a
    :class:`Pending` split, the tensor is loaded when first read."""

    kind = "memory"
    held = True

    def __init__(self, data: ImageSet | Pending):
        self._pending, self._data = (data, None) if isinstance(data, Pending) else (None, data)
        self._n = data.n if isinstance(data, Pending) else len(data)
        self._params = data.params if isinstance(data, Pending) else {}
        self.split, self.classes, self.image_size = data.split, data.classes, data.image_size

    @property
    def data(self) -> ImageSet:
        if self._data is None:
            self._data, self._pending = self._pending.load(), None
        return self._data

    def __len__(self) -> int:
        return self._n

    def epoch(self, epoch, global_batch, seed, rank=0, world=1, views=()):
        for idx in rank_slices(epoch_order(len(self.data), seed, epoch), global_batch, rank, world):
            yield Batch([self.data.images[idx]], self.data.labels[idx], idx, cut=False)

    def subset(self, n):
        return self.data.limit(n)

    def describe(self) -> dict:
        return {**super().describe(), **self._params}

    def load(self) -> None:
        self.data  # noqa: B018 (decodes or generates a pending split)

    def channel_stats(self, n: int = 5000):
        return self.data.channel_stats(n)

    def scan(self, batch_size: int, views=()):
        """Every image once, in index order (uncut: the caller cuts ``views``)."""
        for start in range(0, len(self.data), batch_size):
            idx = torch.arange(start, min(len(self.data), start + batch_size))
            yield Batch([self.data.images[idx]], self.data.labels[idx], idx, cut=False)
