"""Data sets as in-memory uint8 tensors: ``synthetic`` (embedded default), ``cifar10``, ``imagefolder``.

Every data set gives an :class:`ImageSet` per split (``train``/``test``): images ``(N, 3, S, S)``
uint8, integer labels, class names and, for ``synthetic``, the per-image nuisance factors.
Keeping the images as one tensor makes batching, sharding and the methods' batched tensor
transforms (rotation, tiling, crops) cheap on a CPU and trivially movable to a GPU.

Bad input (missing or empty root, a corrupt image, a tree with no class folders) raises
:class:`~sslray.errors.UserError` naming the path.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from . import synthetic
from .cache import save_npz, cache_dir, fingerprint
from .imageset import ImageSet, balanced_first, check_memory, class_rank
from .source import Batch, MemorySource, Source

SYNTHETIC_SIZES = {"train": 10_000, "test": 2_000}


def load_synthetic(split: str, seed: int, size: int, n: int) -> ImageSet:
    path = cache_dir() / f"synthetic-v1-seed{seed}-{split}-{n}-{size}px.npz"
    if path.exists():
        z = np.load(path)
        images, labels = z["images"], z["labels"]
        factors = {k: z[f"factor_{k}"] for k in synthetic.FACTORS}
    else:
        check_memory(n, size, f"synthetic {split} data")
        images, labels, factors = synthetic.generate(n, seed, split, size)
        save_npz(path, images=images, labels=labels, **{f"factor_{k}": v for k, v in factors.items()})
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), list(synthetic.CLASSES),
                    "synthetic", split, {k: torch.from_numpy(v) for k, v in factors.items()})


def load_split(cfg, split: str) -> ImageSet:
    """One split of the data set a :class:`~sslray.config.DataConfig` names, limited as asked."""
    limit = cfg.limit if split == "train" else cfg.test_limit
    if cfg.name == "synthetic_video":
        from .clips import SIZES, load_clips

        return load_clips(split, cfg.seed, cfg.image_size, limit or SIZES[split], cfg.frames)
    if cfg.name == "synthetic":
        n = limit or SYNTHETIC_SIZES[split]
        return load_synthetic(split, cfg.seed, cfg.image_size, n)
    if not cfg.root:
        raise UserError(f"data {cfg.name!r} needs a root folder: --set data.root=PATH")
    if cfg.name == "cifar10":
        from .folder import load_cifar10

        return load_cifar10(cfg.root, split, cfg.image_size, cfg.download).limit(limit)
    from .catalogue import catalogue
    from .folder import decode_catalogue

    return decode_catalogue(catalogue(cfg, split), cfg.image_size)


def load_data(cfg) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` in memory for a DataConfig; all bad input fails here, before any run starts."""
    return load_split(cfg, "train"), load_split(cfg, "test")


def offers(cfg) -> tuple[str, ...]:
    """What the batches of the data set a DataConfig names carry beyond their images
    (:attr:`Batch.extra`), known from the config alone."""
    from .clips import OFFERS

    return OFFERS if cfg.name == "synthetic_video" else ()


def open_sources(cfg) -> tuple[Source, Source]:
    """The ``(train, test)`` sources of a DataConfig (``data.source``: memory, stream, or auto by the
    collection's decoded size); all bad input fails here, before any run starts."""
    if cfg.name == "synthetic_video":
        if cfg.source == "stream" or not cfg.labels:
            raise UserError("data.name=synthetic_video is generated and held in memory, with its labels: leave "
                            "data.source at auto and data.labels at true")
        from .clips import ClipSource

        return ClipSource(load_split(cfg, "train")), ClipSource(load_split(cfg, "test"))
    if cfg.name in ("synthetic", "cifar10"):
        if cfg.source == "stream":
            raise UserError(f"data.source=stream reads image files (data.name=imagefolder or manifest); "
                            f"{cfg.name} is held in memory")
        train, test = load_data(cfg)
        if not cfg.labels:  # the same images with their labels dropped: one class
            train, test = (ImageSet(s.images, torch.zeros_like(s.labels), ["unlabelled"], s.name, s.split)
                           for s in (train, test))
        return MemorySource(train), MemorySource(test)
    if cfg.name == "parquet" and not cfg.labels:
        raise UserError("data.labels=false reads an image folder (data.name=imagefolder), cifar10 or synthetic")
    if cfg.name == "parquet":
        if cfg.source == "memory":
            raise UserError("data.name=parquet streams its shards: leave data.source at auto or stream")
        if not cfg.root:
            raise UserError("data 'parquet' needs a root: --set data.root=FOLDER_OF_SHARDS")
        from .shards import ShardSource

        return tuple(ShardSource(cfg.root, split, cfg.image_size, cfg.cpus_per_worker, limit)
                     for split, limit in (("train", cfg.limit), ("test", cfg.test_limit)))
    from .catalogue import catalogue

    cats = catalogue(cfg, "train"), catalogue(cfg, "test")
    kind = cfg.source
    if kind == "auto":
        decoded = len(cats[0]) * 3 * cfg.image_size**2
        kind = "stream" if decoded > cfg.memory_gb * 2**30 else "memory"
    if kind == "memory":
        from .folder import decode_catalogue

        return tuple(MemorySource(decode_catalogue(c, cfg.image_size)) for c in cats)
    from .stream import StreamSource

    return tuple(StreamSource(c, c.split, cfg.image_size, cfg.cpus_per_worker) for c in cats)


__all__ = ["Batch", "ImageSet", "MemorySource", "Source", "balanced_first", "cache_dir", "class_rank", "fingerprint",
           "load_data", "load_split", "load_synthetic", "offers", "open_sources"]
