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

    def channel_stats(self) -> tuple[list[float], list[float]]:
        x = self.images[:5000].float() / 255
        return x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()


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
