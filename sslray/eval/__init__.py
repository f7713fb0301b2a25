"""Per-layer transfer evaluation on frozen features: linear probe and kNN for every named layer.

Protocol (logged beside every number): features of each layer are average-pooled to at most
``feature_dim`` values (Goyal et al. 2019, see :func:`sslray.models.pool_size`), extracted once
per layer with the trunk in eval mode and cached; a linear classifier is trained on the
standardised training features and scored top-1 on the test split; a weighted kNN vote
(k, temperature) on cosine similarity is scored on the same split.

Evaluation is a pure step: :func:`evaluate` returns metrics and figures; the caller logs them.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..data import MemorySource
from ..models import extract_features, pool_size
from .features import FeatureCache
from .plots import plot_per_layer
from .probes import knn_top1, linear_probe, tuned_linear_probe


def probe_path(cfg, held: bool) -> str:
    """``cached`` or ``streamed``: which probe protocol runs for data from a source that holds its
    split in memory (``held``, :attr:`~sslray.data.source.Source.held`) or streams it."""
    return cfg.probes if cfg.probes != "auto" else ("cached" if held else "streamed")


def probe_protocol(trunk, image_size: int, cfg, held: bool = True) -> dict[str, str]:
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


@contextmanager
def _timed(timings: dict[str, float] | None, part: str):
    t = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - t


def probe_layers(trunk, train_set, test_set, cfg, cache_dir: str | Path | None = None,
                 cache_key: str = "", seed: int = 0, device=None,
                 timings: dict[str, float] | None = None, grid: dict | None = None,
                 feats_out: dict | None = None) -> dict[str, float]:
    """``{"transfer/<layer>/top1": .., "knn/<layer>/top1": ..}`` for every layer of ``cfg.layers``
    (tuned: also ``untuned/<layer>/top1`` and ``transfer/<layer>/{lr,weight_decay,val_top1,lr_at_edge}``).

    ``timings``, when given, receives the seconds spent in ``features``, ``linear`` and ``knn``;
    ``grid``, when given, every layer's probe grid (each head's validation and test top-1)."""
    train_set = train_set.limit(cfg.train_limit)
    test_set = test_set.limit(cfg.test_limit)
    cache = FeatureCache(cache_dir, f"{cache_key}|{len(train_set)}|{len(test_set)}|{cfg.feature_dim}") if cache_dir else None
    feats = {}
    for split, data in (("train", train_set), ("test", test_set)):
        got = cache.get(split, cfg.layers) if cache else None
        if got is None:
            with _timed(timings, "features"):
                got = extract_features(trunk, data.images, cfg.layers, cfg.feature_dim, device=device,
                                       desc=f"features {split}")
            if cache:
                cache.put(split, got)
        feats[split] = got
    if feats_out is not None:
        feats_out.update(feats)
    metrics: dict[str, float] = {}
    for layer in cfg.layers:
        tr, te = feats["train"][layer], feats["test"][layer]
        if "linear" in cfg.protocols:
            with _timed(timings, "linear"):
                got, record = _linear(layer, tr, train_set.labels, te, test_set.labels, train_set.num_classes,
                                      cfg, seed)
                metrics.update(got)
                if grid is not None and record:
                    grid[layer] = record
        if "knn" in cfg.protocols:
            with _timed(timings, "knn"):
                metrics[f"knn/{layer}/top1"] = knn_top1(tr, train_set.labels, te, test_set.labels,
                                                        train_set.num_classes, cfg.knn_k, cfg.knn_temperature)
    if "lowshot" in cfg.protocols:
        metrics.update(lowshot_linear(feats, train_set.labels, test_set.labels, train_set.num_classes, cfg, seed))
    return metrics


def _linear(layer, tr, ytr, te, yte, num_classes, cfg, seed) -> tuple[dict[str, float], dict]:
    """A layer's linear probe, tuned on a validation split or at the fixed lr: metrics and the grid."""
    if cfg.probe_tune:
        return tuned_linear_probe(layer, tr, ytr, te, yte, num_classes, cfg, seed)
    return {f"transfer/{layer}/top1": linear_probe(tr, ytr, te, yte, num_classes, cfg.probe_epochs, cfg.probe_lr,
                                                   cfg.probe_weight_decay, cfg.probe_batch_size, seed)}, {}


def lowshot_linear(feats: dict, train_labels, test_labels, num_classes: int, cfg, seed: int = 0) -> dict[str, float]:
    """``lowshot/<subset>/linear/<layer>/top1`` (and ``.../images``): every layer's linear probe
    trained on each label subset of the training features, scored on the whole test split."""
    from .finetune import label_subset, lowshot_subsets

    metrics: dict[str, float] = {}
    for name, fraction, shots in lowshot_subsets(cfg):
        idx = label_subset(train_labels, fraction, shots, seed)
        metrics[f"lowshot/{name}/images"] = len(idx)
        for layer in cfg.layers:
            got, _ = _linear(layer, feats["train"][layer][idx], train_labels[idx], feats["test"][layer], test_labels,
                             num_classes, cfg, seed)
            metrics[f"lowshot/{name}/linear/{layer}/top1"] = got[f"transfer/{layer}/top1"]
    return metrics


def per_layer(metrics: dict[str, float], kind: str) -> dict[str, float]:
    """``{"res3": 0.61, ...}`` from ``{"<kind>/res3/top1": 0.61, ...}`` (``kind`` may hold slashes:
    ``lowshot/1pct/linear``)."""
    out = {}
    for k, v in metrics.items():
        rest = k[len(kind) + 1:].split("/") if k.startswith(kind + "/") else []
        if len(rest) == 2 and rest[1] == "top1":
            out[rest[0]] = v
    return out


@dataclass
class Evaluation:
    """What an evaluation found: its metrics, and figures (``{file name: matplotlib figure}``)."""

    metrics: dict[str, float]
    figures: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)  # {file name: JSON-able record}, e.g. the probe grid

    def tables(self) -> dict[str, dict[str, float]]:
        out = {"linear probe": per_layer(self.metrics, "transfer"), "kNN": per_layer(self.metrics, "knn"),
               "linear, untuned lr": per_layer(self.metrics, "untuned")}
        names = sorted({k.split("/")[1] for k in self.metrics if k.startswith("lowshot/")})
        for name in names:
            out[f"linear, {name} labels"] = per_layer(self.metrics, f"lowshot/{name}/linear")
        return {k: v for k, v in out.items() if v}

    def lines(self) -> list[str]:
        """The numbers that belong to no layer (fine-tuning), one line each."""
        out = []
        if "finetune/top1" in self.metrics:
            out.append(f"fine-tune (whole trunk)  {100 * self.metrics['finetune/top1']:.1f}")
        for k, v in sorted(self.metrics.items()):
            if k.startswith("lowshot/") and k.endswith("/finetune/top1"):
                out.append(f"fine-tune, {k.split('/')[1]} labels  {100 * v:.1f}")
        cells = [f"{k.split('/')[1]} {100 * v:.1f} ({100 * self.metrics[k.replace('/precision', '/floor_precision')]:.1f})"
                 for k, v in self.metrics.items() if k.startswith("retrieval/") and k.endswith("/precision_at_8")
                 and "/floor_" not in k]
        if cells:
            out.append("retrieval precision@8 (untrained): " + "  ".join(cells))
        edge = [k.split("/")[1] for k, v in self.metrics.items() if k.startswith("transfer/") and k.endswith("/lr_at_edge")
                and v]
        if edge:
            lrs = ", ".join(f"{layer} {self.metrics[f'transfer/{layer}/lr']:g}" for layer in edge)
            out.append(f"probe lr at the edge of its grid ({lrs}): the best may lie beyond; widen eval.probe_lrs")
        return out


def evaluate(trunk, train, test, cfg, *, seed: int = 0, title: str = "",
             cache_dir: str | Path | None = None, cache_key: str = "") -> Evaluation:
    """Run ``cfg.protocols`` on a trunk with the ``train`` and ``test`` data sources: per-layer
    linear probes and kNN on frozen features, low-shot probes, fine-tuning (on a copy), retrieval;
    and, if asked, the invariance measures."""
    device = next(trunk.parameters()).device
    grid: dict = {}
    if probe_path(cfg, train.held) == "cached":
        train_set, test_set = train.subset(cfg.train_limit), test.subset(cfg.test_limit)
        feats: dict = {}
        metrics = probe_layers(trunk, train_set, test_set, cfg, cache_dir, cache_key, seed, device=device, grid=grid,
                               feats_out=feats)
        ft_train, ft_test = MemorySource(train_set), MemorySource(test_set)
    else:  # linear probes on the stream; kNN, low-shot and invariance on a stated subset held in memory
        from .streamed import streamed_linear_probes

        metrics = streamed_linear_probes(trunk, train, test, cfg, seed, device, grid=grid) \
            if "linear" in cfg.protocols else {}
        train_set, test_set = train.subset(cfg.train_limit or cfg.subset), test.subset(cfg.test_limit or cfg.subset)
        if {"knn", "lowshot", "retrieval"} & set(cfg.protocols):
            feats = {split: extract_features(trunk, data.images, cfg.layers, cfg.feature_dim, device=device,
                                             desc=f"features {split}") for split, data in (("train", train_set),
                                                                                           ("test", test_set))}
        if "knn" in cfg.protocols:
            for layer in cfg.layers:
                metrics[f"knn/{layer}/top1"] = knn_top1(feats["train"][layer], train_set.labels, feats["test"][layer],
                                                        test_set.labels, train.num_classes, cfg.knn_k,
                                                        cfg.knn_temperature)
        if "lowshot" in cfg.protocols:
            metrics.update(lowshot_linear(feats, train_set.labels, test_set.labels, train.num_classes, cfg, seed))
        ft_train, ft_test = train, test
    if "finetune" in cfg.protocols:
        from .finetune import finetune, label_subset, lowshot_subsets

        metrics["finetune/top1"] = finetune(trunk, ft_train, ft_test, cfg, seed, device)
        if "lowshot" in cfg.protocols:
            for name, fraction, shots in lowshot_subsets(cfg):
                idx = label_subset(train_set.labels, fraction, shots, seed)
                metrics[f"lowshot/{name}/finetune/top1"] = finetune(
                    trunk, MemorySource(train_set.subset(idx)), ft_test, cfg, seed, device, desc=f"fine-tune {name}")
    figures = {}
    if "retrieval" in cfg.protocols:
        from .retrieval import retrieval

        got, figures = retrieval(trunk, train_set, test_set, feats, cfg, seed, device, title)
        metrics.update(got)
    if cfg.invariance:
        from .invariance import measure_invariance

        metrics.update(measure_invariance(trunk, test_set, cfg, seed=seed))
    result = Evaluation(metrics, records={"probe_grid.json": grid} if grid else {})
    if result.tables():
        result.figures["per_layer.png"] = plot_per_layer(result.tables(), title=title, chance=1 / train.num_classes)
    result.figures.update(figures)
    return result


__all__ = ["Evaluation", "evaluate", "extract_features", "knn_top1", "linear_probe", "per_layer", "probe_layers",
           "probe_protocol"]
