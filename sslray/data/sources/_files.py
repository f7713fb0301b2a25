"""What the image-file sources (``imagefolder``, ``manifest``) share: a listing (a
:class:`~sslray.data.catalogue.Catalogue` per split), decoded once and held in memory, or streamed
through Ray Data (:mod:`sslray.data.stream`), by ``data.source`` (auto: by the decoded size)."""

from __future__ import annotations

from functools import partial

from ...errors import UserError
from ..source import MemorySource, Pending
from .base import Collection


def _decoded(cat, size: int):
    from ..folder import decode_catalogue

    return decode_catalogue(cat, size)


class FileCollection(Collection):
    ways = ("memory", "stream")
    settings = ("root", "source", "decode", "memory_gb", "cpus_per_worker", "max_corrupt", "labels")

    def catalogue(self, cfg, split: str, classes: list[str] | None = None):
        """One split's listing, limited as asked (``classes``: the training split's, already listed)."""
        raise NotImplementedError

    def catalogues(self, cfg):
        """The ``(train, test)`` listings, each listed once, on one class list (the training split's)."""
        if not cfg.root:
            raise UserError(f"data {cfg.name!r} needs a root: --set data.root=PATH")
        train = self.catalogue(cfg, "train")
        return train, self.catalogue(cfg, "test", train.classes)

    def pending(self, cfg, split, cat=None):
        cat = cat if cat is not None else dict(zip(("train", "test"), self.catalogues(cfg)))[split]
        return Pending(len(cat), cat.classes, cfg.image_size, split, partial(_decoded, cat, cfg.image_size),
                       params={"resolved.data.outside_root": cat.outside_root})

    def load(self, cfg):
        return tuple(_decoded(c, cfg.image_size) for c in self.catalogues(cfg))

    def open(self, cfg):
        cats = self.catalogues(cfg)
        way = cfg.source
        if way == "auto":
            decoded = len(cats[0]) * 3 * cfg.image_size**2
            way = "stream" if decoded > cfg.memory_gb * 2**30 else "memory"
        if way == "memory":
            return tuple(MemorySource(self.pending(cfg, c.split, c)) for c in cats)
        from ..stream import StreamSource

        return tuple(StreamSource(c, c.split, cfg.image_size, cfg.cpus_per_worker) for c in cats)
