"""``synthetic``: the embedded shapes (:mod:`sslray.data.synthetic`), generated from ``data.seed``
and held in memory."""

from __future__ import annotations

from functools import partial

import torch

from .. import synthetic
from ..cache import cache_dir, cached
from ..imageset import ImageSet, check_memory
from ..source import MemorySource, Pending
from . import register
from .base import Collection, unlabelled

SIZES = {"train": 10_000, "test": 2_000}


def load_synthetic(split: str, seed: int, size: int, n: int) -> ImageSet:
    def make():
        check_memory(n, size, f"synthetic {split} data")
        images, labels, factors = synthetic.generate(n, seed, split, size)
        return dict(images=images, labels=labels, **{f"factor_{k}": v for k, v in factors.items()})

    z = cached(cache_dir() / f"synthetic-v1-seed{seed}-{split}-{n}-{size}px.npz", make)
    images, labels = z["images"], z["labels"]
    factors = {k: z[f"factor_{k}"] for k in synthetic.FACTORS}
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), list(synthetic.CLASSES),
                    "synthetic", split, {k: torch.from_numpy(v) for k, v in factors.items()})


@register
class Synthetic(Collection):
    name = "synthetic"
    summary = "the embedded shapes (10,000 training and 2,000 test images unless limited), generated from data.seed"
    settings = ("seed", "labels")
    needs_root = False

    def pending(self, cfg, split):
        n = (cfg.limit if split == "train" else cfg.test_limit) or SIZES[split]
        load = partial(load_synthetic, split, cfg.seed, cfg.image_size, n)
        if not cfg.labels:  # the same images with their labels dropped: one class
            return Pending(n, ["unlabelled"], cfg.image_size, split, partial(unlabelled, load))
        return Pending(n, list(synthetic.CLASSES), cfg.image_size, split, load)

    def open(self, cfg):
        self.held_only(cfg)
        return MemorySource(self.pending(cfg, "train")), MemorySource(self.pending(cfg, "test"))
