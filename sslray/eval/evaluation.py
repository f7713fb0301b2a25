"""The evaluation itself: :func:`evaluate` runs the protocols of ``eval.protocols`` on one
:class:`~sslray.eval.protocols.Scan` and returns an :class:`Evaluation` (results, their metrics,
figures, records); :func:`probe_protocol` says what each layer's probe sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import EvalConfig
from ..models import pool_size
from . import results as _results
from .plots import plot_per_layer
from .protocols import Result, Scan, asked, build


def probe_path(cfg: EvalConfig, held: bool) -> str:
    """``cached`` or ``streamed``: which probe protocol runs for data from a source that holds its
    split in memory (``held``, :attr:`~sslray.data.source.Source.held`) or streams it."""
    return cfg.probes if cfg.probes != "auto" else ("cached" if held else "streamed")


def probe_protocol(trunk, image_size: int, cfg: EvalConfig, held: bool = True) -> dict[str, str]:
    """What exactly each layer's probe sees: ``probe/<layer>/pool`` and ``probe/<layer>/dim``, the
    protocol that runs (``probe/protocol``) and, streamed, the subset kNN and invariance use."""
    path = probe_path(cfg, held)
    out = {"probe/protocol": "cached features, a probe per layer" if path == "cached" else
           "streamed through the frozen trunk, all layers' probes at once (multi-head)"}
    if path == "streamed":
        out["probe/knn_images"] = cfg.train_limit or cfg.subset
    for layer, (c, h, _) in trunk.tap_shapes(image_size).items():
        if layer in cfg.layers:
            s = pool_size(c, h, cfg.feature_dim)
            out[f"probe/{layer}/pool"] = f"avg {c}x{h}x{h} -> {c}x{s}x{s}"
            out[f"probe/{layer}/dim"] = c * s * s
    return out


@dataclass
class Evaluation:
    """What an evaluation found: its results, their metrics (``{MLflow key: value}``), figures
    (``{file name: matplotlib figure}``) and records (``{file name: JSON-able record}``, e.g. the
    probe grid)."""

    results: list[Result]
    figures: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.metrics = {**_results.metrics_of(self.results), **self.metrics}

    @classmethod
    def of_metrics(cls, metrics: dict[str, float]) -> "Evaluation":
        """An evaluation read back from its metrics (a run's ``transfer.json``)."""
        return cls(_results.results_of(metrics))

    def tables(self) -> dict[str, dict[str, float]]:
        return _results.tables(self.results)

    def lines(self) -> list[str]:
        """The numbers that belong to no layer (fine-tuning), one line each."""
        return _results.lines(self.results)


def run_protocols(scan: Scan, names) -> list[Result]:
    """Every protocol of ``names`` on one scan, in order."""
    out: list[Result] = []
    for name in names:
        out += build(scan.cfg, name).run(scan)
    return out


def evaluate(trunk, train, test, cfg: EvalConfig, *, seed: int = 0, title: str = "",
             cache_dir: str | Path | None = None, cache_key: str = "") -> Evaluation:
    """Run ``cfg.protocols`` on a trunk with the ``train`` and ``test`` data sources (memory or
    stream): each protocol sees the same :class:`Scan` of them."""
    scan = Scan(trunk, train, test, cfg, seed=seed, title=title, streamed=probe_path(cfg, train.held) == "streamed",
                cache_dir=cache_dir, cache_key=cache_key)
    result = Evaluation(run_protocols(scan, asked(cfg)), records=scan.records)
    if result.tables():
        result.figures["per_layer.png"] = plot_per_layer(result.tables(), title=title, chance=1 / train.num_classes)
    result.figures.update(scan.figures)
    return result


def probe_layers(trunk, train_set, test_set, cfg: EvalConfig, cache_dir: str | Path | None = None, cache_key: str = "",
                 seed: int = 0, device=None, timings: dict[str, float] | None = None,
                 grid: dict | None = None) -> dict[str, float]:
    """The metrics of the per-layer probes of ``cfg.protocols`` on image sets held in memory (the
    cached path), e.g. ``{"transfer/<layer>/top1": .., "knn/<layer>/top1": ..}``.

    ``timings``, when given, receives the seconds spent in ``features`` and in each protocol;
    ``grid``, when given, every layer's probe grid (each head's validation and test top-1)."""
    from ..data import MemorySource

    scan = Scan(trunk, MemorySource(train_set), MemorySource(test_set), cfg, seed=seed, cache_dir=cache_dir,
                cache_key=cache_key, device=device, timings=timings)
    metrics = _results.metrics_of(run_protocols(scan, asked(cfg)))
    if grid is not None:
        grid.update(scan.records.get("probe_grid.json", {}))
    return metrics


def per_layer(metrics: dict[str, float]) -> dict[str, float]:
    """``{"res3": 0.61, ...}``: the linear probe's top-1 per layer among ``metrics``."""
    return _results.linear_top1(metrics)
