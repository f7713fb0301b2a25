"""What a data source is: a named collection that opens a ``(train, test)`` pair of
:class:`~sslray.data.source.Source` for a :class:`~sslray.config.DataConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ...errors import UserError
from ..imageset import ImageSet
from ..source import Pending, Source


class Collection:
    """One registered data source (see :mod:`sslray.data.sources`)."""

    name: ClassVar[str] = ""
    #: one line: what it is
    summary: ClassVar[str] = ""
    #: the ``data.*`` keys it reads beyond those of every source (name, limit, test_limit, image_size)
    settings: ClassVar[tuple[str, ...]] = ()
    #: what its batches carry in :attr:`~sslray.data.source.Batch.extra` (see :mod:`sslray.data.clips`)
    offers: ClassVar[tuple[str, ...]] = ()
    #: how its splits can be served: ``memory`` (decoded once, held), ``stream`` (read while training)
    ways: ClassVar[tuple[str, ...]] = ("memory",)
    #: False: generated here, no ``data.root`` needed
    needs_root: ClassVar[bool] = True
    fps: ClassVar[int] = 0  # frames per second of its clips (0: stills)
    sample_rate: ClassVar[int] = 0  # Hz of its sound track (0: no sound)

    def open(self, cfg) -> tuple[Source, Source]:
        """The ``(train, test)`` sources (``data.source``: memory, stream, or auto). Opening lists and
        checks and writes nothing; all bad input of the data fails here, in one line."""
        raise NotImplementedError

    def pending(self, cfg, split: str) -> Pending:
        """A split listed (or sized) but not yet decoded or generated: loading it writes the data cache."""
        raise NotImplementedError

    def split(self, cfg, split: str) -> ImageSet:
        """One split in memory, limited as asked."""
        return self.pending(cfg, split).load()

    def load(self, cfg) -> tuple[ImageSet, ImageSet]:
        """``(train, test)`` in memory."""
        return self.split(cfg, "train"), self.split(cfg, "test")

    def check_root(self, cfg) -> None:
        """A root where one is needed, and a local one exists (remote roots are reached when opened)."""
        if not self.needs_root:
            return
        if not cfg.root:
            raise UserError(f"data {cfg.name!r} needs a root: --set data.root=PATH")
        if "://" not in cfg.root and not Path(cfg.root).expanduser().exists():
            raise UserError(f"data root not found: {cfg.root}")

    def frames(self, cfg) -> int:
        """Frames per clip of its batches (0: stills)."""
        return cfg.frames if "clip" in self.offers else 0

    def pipeline_cpus(self, cfg) -> float:
        """CPUs a training process's data pipeline takes, known from the config alone."""
        return cfg.cpus_per_worker if cfg.source == "stream" else 0.0

    def held_only(self, cfg) -> None:
        """Refuses ``data.source=stream`` for a source held in memory."""
        if cfg.source == "stream":
            from .registry import streaming

            raise UserError(f"data.source=stream reads image files (data.name={' or '.join(streaming())}); "
                            f"{cfg.name} is held in memory")


def unlabelled(load) -> ImageSet:
    """The images ``load()`` gives with their labels dropped: one class."""
    import torch

    s = load()
    return ImageSet(s.images, torch.zeros_like(s.labels), ["unlabelled"], s.name, s.split)
