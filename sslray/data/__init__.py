"""Data sources: the embedded shapes (``synthetic``), generated clips (``synthetic_video``),
``cifar10``, image collections on disk or object storage (``imagefolder``, ``manifest``) and
Parquet shards (``parquet``), held in memory (:class:`MemorySource`: one uint8 tensor per split,
decoded once and cached) or streamed (Ray Data: :mod:`.stream`, :mod:`.shards`). Every source
serves the :class:`~sslray.data.source.Source` / :class:`~sslray.data.source.Batch` contract, cut
to the views a method declares (:mod:`.views`); ``sslray data prepare`` writes the shards
(:mod:`.prepare`).

Every split's labels index one class list: the training split's. Opening a source lists and
checks; a memory source decodes its split when first read, so a run checks everything before it
writes the data cache.

Bad input (missing or empty root, a corrupt image, a tree with no class folders) raises
:class:`~sslray.errors.UserError` naming the path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from . import synthetic
from .cache import save_npz, cache_dir, fingerprint
from .imageset import ImageSet, balanced_first, check_memory, class_rank
from .source import Batch, MemorySource, Pending, Source

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
    return _pending(cfg, split).load() if cfg.name != "cifar10" else _cifar10(cfg, split)


def load_data(cfg) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` in memory for a DataConfig; all bad input fails here, before any run starts."""
    if cfg.name in ("imagefolder", "manifest"):
        return tuple(_decoded(c, cfg.image_size) for c in _catalogues(cfg))
    return load_split(cfg, "train"), load_split(cfg, "test")


def _cifar10(cfg, split: str) -> ImageSet:
    from .folder import load_cifar10

    if not cfg.root:
        raise UserError(f"data {cfg.name!r} needs a root folder: --set data.root=PATH")
    limit = cfg.limit if split == "train" else cfg.test_limit
    return load_cifar10(cfg.root, split, cfg.image_size, cfg.download).limit(limit)


def _unlabelled(load) -> ImageSet:
    s = load()
    return ImageSet(s.images, torch.zeros_like(s.labels), ["unlabelled"], s.name, s.split)


def _decoded(cat, size: int) -> ImageSet:
    from .folder import decode_catalogue

    return decode_catalogue(cat, size)


def _catalogues(cfg):
    from .catalogue import catalogues

    return catalogues(cfg)


def _pending(cfg, split: str, cat=None) -> Pending:
    """A split of a generated collection (synthetic, synthetic_video) or of a listed catalogue, not
    yet generated or decoded: loading it is what writes the data cache."""
    from functools import partial

    limit = cfg.limit if split == "train" else cfg.test_limit
    if cfg.name == "synthetic_video":
        from .clips import SIZES, load_clips
        from .video import CLASSES

        n = limit or SIZES[split]
        return Pending(n, list(CLASSES), cfg.image_size, split,
                       partial(load_clips, split, cfg.seed, cfg.image_size, n, cfg.frames), cfg.frames)
    if cfg.name == "synthetic":
        n = limit or SYNTHETIC_SIZES[split]
        load = partial(load_synthetic, split, cfg.seed, cfg.image_size, n)
        if not cfg.labels:  # the same images with their labels dropped: one class
            return Pending(n, ["unlabelled"], cfg.image_size, split, partial(_unlabelled, load))
        return Pending(n, list(synthetic.CLASSES), cfg.image_size, split, load)
    cat = cat if cat is not None else dict(zip(("train", "test"), _catalogues(cfg)))[split]
    return Pending(len(cat), cat.classes, cfg.image_size, split, partial(_decoded, cat, cfg.image_size),
                   params={"resolved.data.outside_root": cat.outside_root})


def check_root(cfg) -> None:
    """The collection a DataConfig names has a root, and a local one exists (what a study checks of
    every trial's data before any trial starts; remote roots are reached when opened)."""
    if cfg.name in ("synthetic", "synthetic_video"):
        return
    if not cfg.root:
        raise UserError(f"data {cfg.name!r} needs a root: --set data.root=PATH")
    if "://" not in cfg.root and not Path(cfg.root).expanduser().exists():
        raise UserError(f"data root not found: {cfg.root}")


def offers(cfg) -> tuple[str, ...]:
    """What the batches of the data set a DataConfig names carry beyond their images
    (:attr:`Batch.extra`), known from the config alone."""
    from .clips import OFFERS

    return OFFERS if cfg.name == "synthetic_video" else ()


def open_sources(cfg) -> tuple[Source, Source]:
    """The ``(train, test)`` sources of a DataConfig (``data.source``: memory, stream, or auto by the
    collection's decoded size). Opening lists and checks, and writes nothing: a memory source
    decodes (or generates) its split, filling the data cache, when its images are first read, so
    every check of a run can come before that. All bad input of the data fails here."""
    if cfg.name == "synthetic_video":
        if cfg.source == "stream" or not cfg.labels:
            raise UserError("data.name=synthetic_video is generated and held in memory, with its labels: leave "
                            "data.source at auto and data.labels at true")
        from .clips import ClipSource

        return ClipSource(_pending(cfg, "train")), ClipSource(_pending(cfg, "test"))
    if cfg.name in ("synthetic", "cifar10"):
        if cfg.source == "stream":
            raise UserError(f"data.source=stream reads image files (data.name=imagefolder or manifest); "
                            f"{cfg.name} is held in memory")
        if cfg.name == "synthetic":
            return MemorySource(_pending(cfg, "train")), MemorySource(_pending(cfg, "test"))
        train, test = load_data(cfg)
        if not cfg.labels:  # the same images with their labels dropped: one class
            train, test = (_unlabelled(lambda s=s: s) for s in (train, test))
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
    cats = _catalogues(cfg)
    kind = cfg.source
    if kind == "auto":
        decoded = len(cats[0]) * 3 * cfg.image_size**2
        kind = "stream" if decoded > cfg.memory_gb * 2**30 else "memory"
    if kind == "memory":
        return tuple(MemorySource(_pending(cfg, c.split, c)) for c in cats)
    from .stream import StreamSource

    return tuple(StreamSource(c, c.split, cfg.image_size, cfg.cpus_per_worker) for c in cats)


#: data.decode=auto decodes on the GPU when a training process's pipeline has fewer CPUs than this.
#: Measured on one H200 (docs/performance.md): one CPU cut SimCLR's two 224-px views of photo-like
#: 114-KB JPEGs at 290 img/s, and SimCLR decoded on the GPU trained at 1,753 img/s (nvJPEG and the
#: crops share the GPU with training): the CPUs are faster from about 6 of them on
AUTO_GPU_BELOW_CPUS = 6


def set_decode(cfg, train: Source, gpu: bool) -> str:
    """Where the training split's images are decoded (``data.decode``; ``gpu``: the run trains on CUDA
    devices), set on the source; ``data.decode=gpu`` that cannot be honoured fails in one line."""
    from .stream import StreamSource

    streamed = isinstance(train, StreamSource)
    if cfg.decode == "gpu" and not gpu:
        raise UserError("data.decode=gpu decodes JPEGs on the training GPU (nvJPEG): this run has none (no CUDA "
                        "device here, dist.gpus_per_worker=0); use data.decode=cpu or auto")
    if cfg.decode == "gpu" and not streamed:
        raise UserError("data.decode=gpu applies to image files streamed while training (data.source=stream with "
                        "imagefolder or manifest); this run's data is decoded on the CPU once")
    mode = cfg.decode if cfg.decode != "auto" else ("gpu" if gpu and streamed and
                                                   cfg.cpus_per_worker < AUTO_GPU_BELOW_CPUS else "cpu")
    if streamed:
        train.decode = mode
    return mode


__all__ = ["Batch", "ImageSet", "MemorySource", "Source", "balanced_first", "cache_dir", "check_root", "class_rank", "fingerprint",
           "load_data", "load_split", "load_synthetic", "offers", "open_sources", "set_decode"]
