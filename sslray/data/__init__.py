"""Data sources, one registered module each (:mod:`.sources`: the embedded shapes, generated
clips, CIFAR-10, image folders, manifests, Parquet shards; adding one is adding a module there),
held in memory (:class:`MemorySource`: one uint8 tensor per split, decoded once and cached) or
streamed (Ray Data: :mod:`.stream`, :mod:`.shards`). Every source serves the
:class:`~sslray.data.source.Source` / :class:`~sslray.data.source.Batch` contract, cut to the views
a method declares (:mod:`.views`); ``sslray data prepare`` writes the shards (:mod:`.prepare`).
The functions here take a :class:`~sslray.config.DataConfig` and ask its registered source.

Every split's labels index one class list: the training split's. Opening a source lists and
checks; a memory source decodes its split when first read, so a run checks everything before it
writes the data cache.

Bad input (missing or empty root, a corrupt image, a tree with no class folders) raises
:class:`~sslray.errors.UserError` naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .cache import cache_dir, fingerprint
from .imageset import ImageSet, balanced_first, class_rank
from .source import Batch, MemorySource, Source
from .sources import get_collection, offered_by
from .sources.synthetic import load_synthetic


def load_split(cfg, split: str) -> ImageSet:
    """One split of the data set a :class:`~sslray.config.DataConfig` names, limited as asked."""
    return get_collection(cfg.name).split(cfg, split)


def load_data(cfg) -> tuple[ImageSet, ImageSet]:
    """``(train, test)`` in memory for a DataConfig; all bad input fails here, before any run starts."""
    return get_collection(cfg.name).load(cfg)


def check_root(cfg) -> None:
    """The collection a DataConfig names has a root, and a local one exists (what a study checks of
    every trial's data before any trial starts; remote roots are reached when opened)."""
    get_collection(cfg.name).check_root(cfg)


def offers(cfg) -> tuple[str, ...]:
    """What the batches of the data set a DataConfig names carry beyond their images
    (:attr:`Batch.extra`), known from the config alone."""
    return tuple(get_collection(cfg.name).offers)


@dataclass(frozen=True)
class Offered:
    """What a DataConfig's batches carry beyond their images, known from the config alone."""

    offers: tuple[str, ...]
    frames: int  # frames per clip (0: stills)
    sample_rate: int  # Hz of the sound track (0: no sound)
    fps: int  # frames per second of a clip (0: stills)


def offered(cfg) -> Offered:
    c = get_collection(cfg.name)
    frames = c.frames(cfg)
    return Offered(tuple(c.offers), frames, c.sample_rate if "audio" in c.offers else 0, c.fps if frames else 0)


def lacking(cfg, keys) -> str:
    """Why a DataConfig's batches lack ``keys`` (what a method needs), and where they are offered."""
    where = offered_by(keys)
    return f"data {cfg.name!r} has none" + (f" (use data.name={' or '.join(where)})" if where else "")


def pipeline_cpus(cfg) -> float:
    """CPUs a training process's data pipeline takes, known from the config alone (preflight)."""
    return get_collection(cfg.name).pipeline_cpus(cfg)


def open_sources(cfg) -> tuple[Source, Source]:
    """The ``(train, test)`` sources of a DataConfig (``data.source``: memory, stream, or auto by the
    collection's decoded size). Opening lists and checks, and writes nothing: a memory source
    decodes (or generates) its split, filling the data cache, when its images are first read, so
    every check of a run can come before that. All bad input of the data fails here."""
    return get_collection(cfg.name).open(cfg)


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


__all__ = ["Batch", "ImageSet", "MemorySource", "Offered", "Source", "balanced_first", "cache_dir", "check_root",
           "class_rank", "fingerprint", "lacking", "load_data", "load_split", "load_synthetic", "offered", "offers",
           "open_sources", "pipeline_cpus", "set_decode"]
