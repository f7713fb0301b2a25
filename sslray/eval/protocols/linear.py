"""The linear probe of every layer (Goyal et al. 2019): a linear classifier on standardised frozen
features, trained with AdamW and a cosine schedule, scored top-1 on the test split.

Cached (``eval.probes``), each layer's probe trains on the features :meth:`Scan.features` holds;
streamed, every layer's probe trains at once on batches passed through the frozen trunk
(:mod:`sslray.eval.streamed`, VISSL's multi-head protocol). Tuned (``eval.linear.tune``), a grid of
``(lr, weight_decay)`` trains side by side and the head best on a held-out validation split is
reported; the grid goes to ``probe_grid.json``.

Results: ``top1`` per layer; tuned also ``untuned_top1`` (variant ``untuned``: the fixed-setting
head), the chosen ``lr``, ``weight_decay``, its ``val_top1`` and ``lr_at_edge``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, PositiveInt

from ...config import MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_WEIGHT_DECAY, Strict
from . import Protocol, Result, register, timed


class LinearSettings(Strict):
    epochs: PositiveInt = Field(30, le=MAX_EPOCHS)
    lr: float = Field(0.01, gt=0, le=MAX_LR, description="AdamW lr of the linear probe when untuned (tune: false); "
                                                         "tuned, the grid's reference head (untuned/<layer>/top1)")
    weight_decay: float = Field(5e-4, ge=0, le=MAX_WEIGHT_DECAY, description="weight decay of the untuned probe")
    tune: bool = Field(True, description="choose each layer's probe lr and weight decay on a validation split carved "
                                         "from the training split: every head of the grid trains in one pass, the "
                                         "test top-1 of the head best on validation is reported")
    lrs: list[Annotated[float, Field(gt=0, le=MAX_LR)]] = Field(
        default_factory=lambda: [0.0003, 0.001, 0.003], min_length=1,
        description="probe grid: AdamW lrs (CIFAR-scale features chose 3e-4 to 1e-3; the fixed lr is added)")
    weight_decays: list[Annotated[float, Field(ge=0, le=MAX_WEIGHT_DECAY)]] = Field(
        default_factory=lambda: [5e-4, 0.05], min_length=1,
        description="probe grid: AdamW (decoupled) weight decays; the per-step shrink is lr x weight decay")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="tune: share of each class held out of the probe's "
                                                               "training split for validation")
    batch_size: PositiveInt = Field(256, le=MAX_BATCH)


def probe(tr, ytr, te, yte, num_classes: int, s: LinearSettings, seed: int = 0) -> tuple[dict[str, tuple], dict]:
    """One layer's probe, tuned on a validation split or at the fixed lr: ``{metric: (value, images)}``
    and its grid record (empty untuned)."""
    from ..probes import linear_probe, tuned_linear_probe

    if s.tune:
        return tuned_linear_probe("", tr, ytr, te, yte, num_classes, s, seed)
    return {"top1": (linear_probe(tr, ytr, te, yte, num_classes, s.epochs, s.lr, s.weight_decay, s.batch_size, seed),
                     len(yte))}, {}


def results_of(layer: str, got: dict[str, tuple], protocol: str = "linear", variant: str = "") -> list[Result]:
    """A layer's probe numbers as results (``untuned_top1`` as the ``untuned`` variant's ``top1``)."""
    out = []
    for metric, (value, n) in got.items():
        if metric == "untuned_top1":
            out.append(Result(protocol, "top1", value, layer, "untuned", n))
        else:
            out.append(Result(protocol, metric, value, layer, variant, n))
    return out


@register
class Linear(Protocol):
    name = "linear"
    Settings = LinearSettings
    head = "transfer"
    own_heads = ("untuned",)
    title = "linear probe"
    over_epochs = True
    renamed = {"probe_epochs": "epochs", "probe_lr": "lr", "probe_weight_decay": "weight_decay", "probe_tune": "tune",
               "probe_lrs": "lrs", "probe_weight_decays": "weight_decays", "probe_val_fraction": "val_fraction",
               "probe_batch_size": "batch_size"}

    def run(self, scan) -> list[Result]:
        s, c = self.settings, scan.cfg
        grid: dict = {}
        out: list[Result] = []
        if scan.streamed:
            from ..streamed import streamed_linear_probes

            with timed(scan.timings, self.name):
                got = streamed_linear_probes(scan.trunk, scan.train, scan.test, c.layers, c.feature_dim, s, scan.seed,
                                             scan.device, grid=grid)
            for layer in c.layers:
                out += results_of(layer, got[layer])
        else:
            feats = scan.features()
            ytr, yte = scan.train_set.labels, scan.test_set.labels
            for layer in c.layers:
                with timed(scan.timings, self.name):
                    got, record = probe(feats["train"][layer], ytr, feats["test"][layer], yte, scan.num_classes, s,
                                        scan.seed)
                out += results_of(layer, got)
                if record:
                    grid[layer] = record
        if grid:
            scan.records["probe_grid.json"] = grid
        return out

    @classmethod
    def title_of(cls, variant: str) -> str | None:
        return {"": cls.title, "untuned": "linear, untuned lr"}.get(variant)

    @classmethod
    def lines(cls, results: list[Result]) -> list[str]:
        edge = [r.layer for r in results if r.protocol == cls.name and r.metric == "lr_at_edge" and r.value]
        if not edge:
            return []
        lr = {r.layer: r.value for r in results if r.protocol == cls.name and r.metric == "lr" and not r.variant}
        lrs = ", ".join(f"{layer} {lr[layer]:g}" for layer in edge)
        return [f"probe lr at the edge of its grid ({lrs}): the best may lie beyond; widen eval.linear.lrs"]
