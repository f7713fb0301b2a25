"""``cifar10``: CIFAR-10's Python pickles under ``data.root`` (downloaded with ``data.download``),
held in memory."""

from __future__ import annotations

from ...errors import UserError
from ..source import MemorySource
from . import register
from .base import Collection, unlabelled


@register
class Cifar10(Collection):
    name = "cifar10"
    summary = "CIFAR-10 under data.root (data.download=true fetches it), held in memory"
    settings = ("root", "download", "labels")

    def split(self, cfg, split):
        from ..folder import load_cifar10

        if not cfg.root:
            raise UserError(f"data {cfg.name!r} needs a root folder: --set data.root=PATH")
        limit = cfg.limit if split == "train" else cfg.test_limit
        return load_cifar10(cfg.root, split, cfg.image_size, cfg.download).limit(limit)

    def open(self, cfg):
        self.held_only(cfg)
        train, test = self.load(cfg)
        if not cfg.labels:  # the same images with their labels dropped: one class
            train, test = (unlabelled(lambda s=s: s) for s in (train, test))
        return MemorySource(train), MemorySource(test)
