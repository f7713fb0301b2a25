"""A split of a data set held in memory: uint8 images, labels, class names and, for ``synthetic``,
the per-image nuisance factors; and class-balanced subsets."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 (N, 3, S, S)
    labels: torch.Tensor  # int64 (N,)
    classes: list[str]
    name: str
    split: str
    factors: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, idx: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[idx], self.labels[idx], self.classes, self.name, self.split,
                        {k: v[idx] for k, v in self.factors.items()})

    def limit(self, n: int | None) -> "ImageSet":
        """The first ``n`` images, class-balanced (round-robin over classes, original order)."""
        if n is None or n >= len(self):
            return self
        return self.subset(torch.from_numpy(balanced_first(self.labels.numpy(), n)))

    def channel_stats(self, n: int = 5000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] of the first ``n`` images, in chunks (a float copy of
        them all would be 4 bytes a pixel)."""
        return channel_moments(self.images[s : s + 500] for s in range(0, min(n, len(self)), 500))


def channel_moments(batches) -> tuple[list[float], list[float]]:
    """Per-channel mean and (unbiased) std in [0, 1] of uint8 ``(B, 3, H, W)`` batches, accumulated in
    float64 so that no batch outlives its turn."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for b in batches:
        x = b.double().div_(255)
        total += x.sum((0, 2, 3))
        squares += (x * x).sum((0, 2, 3))
        count += x.numel() // 3
    mean = total / count
    var = (squares - count * mean * mean) / max(count - 1, 1)
    return mean.tolist(), var.clamp_min(0).sqrt().tolist()


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(n: int, size: int, what: str) -> None:
    """A one-line UserError, before any allocation, when ``n`` uint8 images of ``size`` px would not
    fit in this machine's available memory."""
    from ..errors import UserError

    need, free = n * 3 * size * size, available_memory()
    if free and need > 0.8 * free:
        raise UserError(f"{what}: {n} images at {size} px need {need / 2**30:.1f} GiB of memory, "
                        f"{free / 2**30:.1f} GiB are available; stream them (image folders: data.source=stream) "
                        f"or lower data.image_size or data.limit")


def class_rank(labels: np.ndarray) -> np.ndarray:
    """Position of every item among the items of its class (0 for the first of each class)."""
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    return rank


def balanced_first(labels: np.ndarray, n: int) -> np.ndarray:
    """Indices of the first ``n`` items taking classes in turn, returned in original order."""
    return np.sort(np.lexsort((np.arange(len(labels)), class_rank(labels)))[:n])
