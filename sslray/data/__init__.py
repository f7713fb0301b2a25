"""Data sets as in-memory uint8 tensors: ``synthetic`` (embedded default), ``cifar10``, ``imagefolder``.

Every data set gives an :class:`ImageSet` per split (``train``/``test``): images ``(N, 3, S, S)``
uint8, integer labels, class names and, for ``synthetic``, the per-image nuisance factors.
Keeping the images as one tensor makes batching, sharding and the methods' batched tensor
transforms (rotation, tiling, crops) cheap on a CPU and trivially movable to a GPU.

Bad input (missing or empty root, a corrupt image, a tree with no class folders) raises
:class:`~sslray.errors.UserError` naming the path.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from . import synthetic

SYNTHETIC_SIZES = {"train": 10_000, "test": 2_000}


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


def cache_dir() -> Path:
    root = os.environ.get("SSLRAY_CACHE") or Path.home() / ".cache" / "sslray"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache


def load_synthetic(split: str, seed: int, size: int, n: int) -> ImageSet:
    path = cache_dir() / f"synthetic-v1-seed{seed}-{split}-{n}-{size}px.npz"
    if path.exists():
        z = np.load(path)
        images, labels = z["images"], z["labels"]
        factors = {k: z[f"factor_{k}"] for k in synthetic.FACTORS}
    else:
        images, labels, factors = synthetic.generate(n, seed, split, size)
        _save_npz(path, images=images, labels=labels, **{f"factor_{k}": v for k, v in factors.items()})
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), list(synthetic.CLASSES),
                    "synthetic", split, {k: torch.from_numpy(v) for k, v in factors.items()})


def load_split(cfg, split: str) -> ImageSet:
    """One split of the data set a :class:`~sslray.config.DataConfig` names, limited as asked."""
    limit = cfg.limit if split == "train" else cfg.test_limit
    if cfg.name == "synthetic":
        n = limit or SYNTHETIC_SIZES[split]
        return load_synthetic(split, cfg.seed, cfg.image_size, n)
    if not cfg.root:
        raise UserError(f"data {cfg.name!r} needs a root folder: --set data.root=PATH")
    if cfg.name == "cifar10":
        from .folder import load_cifar10

        return load_cifar10(cfg.root, split, cfg.image_size, cfg.download).limit(limit)
    from .folder import load_imagefolder

    return load_imagefolder(cfg.root, split, cfg.image_size, limit)


def load_data(cfg) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` for a DataConfig; all bad input fails here, before any run starts."""
    return load_split(cfg, "train"), load_split(cfg, "test")


def fingerprint(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]
