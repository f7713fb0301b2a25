"""What every evaluation protocol is: a name, typed settings (``eval.<name>.<key>``), and a ``run``
that takes a :class:`Scan` of a frozen trunk and returns :class:`Result` s.

A protocol never builds an MLflow key, a table or a figure from its numbers: :mod:`sslray.eval.results`
derives all of them from the results, in one place.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import time

from ...config import Strict


@dataclass(frozen=True)
class Result:
    """One number of an evaluation: ``metric`` of ``protocol`` at ``layer`` (None: of no layer),
    under ``variant`` (a label subset and its probe, ``1pct/linear``; a transform, ``rotation``;
    empty: the protocol itself), scored on ``n`` images (None: not known, e.g. read back from MLflow)."""

    protocol: str
    metric: str
    value: float
    layer: str | None = None
    variant: str = ""
    n: int | None = None


class NoSettings(Strict):
    """A protocol with nothing to set."""


class Protocol:
    """An evaluation protocol. Subclasses set :attr:`name` and :attr:`Settings`, are decorated with
    :func:`~sslray.eval.protocols.register`, and implement :meth:`run`."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[Strict]] = NoSettings
    #: the first part of its MLflow keys (``<head>/[<variant>/][<layer>/]<metric>``); the name if empty
    head: ClassVar[str] = ""
    #: first parts of variants spelt in place of the head (the linear probe's ``untuned/<layer>/top1``)
    own_heads: ClassVar[tuple[str, ...]] = ()
    #: the per-layer table of its ``top1`` (None: no table); a variant's title is ``title_of``
    title: ClassVar[str | None] = None
    #: run again on the trunks kept after ``eval.at_epochs`` (the cheap per-layer probes)
    over_epochs: ClassVar[bool] = False
    #: flat keys of an older EvalConfig, ``{old: new key in the block}``: typed by a user, refused
    #: with the new name; read from a stored config, renamed. ``{old: ""}``: the old key held a value
    #: that asked for the protocol itself (``eval.invariance: [rotation]``), read by :meth:`from_flat`
    renamed: ClassVar[dict[str, str]] = {}
    #: how to write what such an old value meant (the refusal's hint)
    hint: ClassVar[str] = ""

    def __init__(self, settings: Strict):
        self.settings = settings

    def run(self, scan: "Scan") -> list[Result]:  # pragma: no cover - every protocol implements it
        raise NotImplementedError

    @classmethod
    def from_flat(cls, value) -> dict:
        """The settings block an older config's flat value (``renamed = {old: ""}``) meant."""
        raise NotImplementedError

    @classmethod
    def key_head(cls) -> str:
        return cls.head or cls.name

    @classmethod
    def title_of(cls, variant: str) -> str | None:
        """The title of the per-layer ``top1`` table of a variant (None: no table)."""
        return cls.title if not variant else None

    @classmethod
    def lines(cls, results: list[Result]) -> list[str]:
        """Console lines for its numbers that belong to no table (fine-tuning's top-1, a warning)."""
        return []


@contextmanager
def timed(timings: dict[str, float] | None, part: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - t


@dataclass
class Scan:
    """A frozen trunk and the data it is evaluated on, the same whether the data is held in memory
    or streamed: every protocol runs on this one interface.

    - :attr:`train_set`, :attr:`test_set`: the images held in memory (class-balanced): on the cached
      path ``eval.train_limit`` / ``eval.test_limit``; streamed, a stated subset (``eval.subset``).
    - :meth:`features`: pooled frozen features of those images, every layer, extracted once (and
      cached on disk when a cache folder is given).
    - :attr:`train`, :attr:`test`: the data sources (memory or stream), for protocols that pass the
      whole split through the trunk (streamed linear probes, fine-tuning); :attr:`fit_train` and
      :attr:`fit_test` what such a protocol trains and scores on.
    """

    trunk: object
    train: object  # Source
    test: object  # Source
    cfg: object  # EvalConfig
    seed: int = 0
    title: str = ""
    streamed: bool = False
    cache_dir: str | Path | None = None
    cache_key: str = ""
    device: object = None
    timings: dict[str, float] | None = None
    records: dict = field(default_factory=dict)  # {file name: JSON-able record}, e.g. the probe grid
    figures: dict = field(default_factory=dict)  # {file name: matplotlib figure}
    _feats: dict | None = None

    def __post_init__(self):
        if self.device is None:
            self.device = next(self.trunk.parameters()).device
        c = self.cfg
        extra = c.subset if self.streamed else None
        self.train_set = self.train.subset(c.train_limit or extra)
        self.test_set = self.test.subset(c.test_limit or extra)
        self.num_classes = self.train.num_classes

    @property
    def fit_train(self):
        from ...data import MemorySource

        return self.train if self.streamed else MemorySource(self.train_set)

    @property
    def fit_test(self):
        from ...data import MemorySource

        return self.test if self.streamed else MemorySource(self.test_set)

    def features(self) -> dict[str, dict]:
        """``{"train"|"test": {layer: (N, D) float16}}`` of :attr:`train_set` and :attr:`test_set`."""
        if self._feats is None:
            from ...models import extract_features
            from ..features import FeatureCache

            c = self.cfg
            cache = FeatureCache(self.cache_dir, f"{self.cache_key}|{len(self.train_set)}|{len(self.test_set)}|"
                                                 f"{c.feature_dim}") if self.cache_dir else None
            feats = {}
            for split, data in (("train", self.train_set), ("test", self.test_set)):
                got = cache.get(split, c.layers) if cache else None
                if got is None:
                    with timed(self.timings, "features"):
                        got = extract_features(self.trunk, data.images, c.layers, c.feature_dim, device=self.device,
                                               desc=f"features {split}")
                    if cache:
                        cache.put(split, got)
                feats[split] = got
            self._feats = feats
        return self._feats
