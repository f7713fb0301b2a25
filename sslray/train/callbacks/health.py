"""Representation health and the collapse rule as callbacks (``eval.health``, ``eval.collapse_*``,
``eval.stop_on_collapse``)."""

from __future__ import annotations

from ...config import EvalConfig
from ...eval.health import Collapsed, collapse
from ...eval.monitor import HealthMonitor
from ...tracking.tags import COLLAPSED_TAG
from . import Callback


class HealthCallback(Callback):
    """``health/std``, ``health/rank``, ``health/alignment``, ``health/uniformity`` of pooled res5
    on a fixed subset (:class:`~sslray.eval.monitor.HealthMonitor`)."""

    def __init__(self, trunk, train, cfg: EvalConfig):
        self.trunk, self.monitor = trunk, HealthMonitor(train, cfg)

    def on_epoch(self, epoch, logs, state):
        logs.update(self.monitor(self.trunk))


class CollapseRule(Callback):
    """Flags a collapse (:func:`~sslray.eval.health.collapse`) once per run: one console line and the
    tag :data:`~sslray.tracking.tags.COLLAPSED_TAG`; ``why`` holds the epoch's reason (None: healthy).
    ``embed_dim`` is the method's :attr:`~sslray.methods.base.Method.embed_dim`."""

    def __init__(self, method: str, embed_dim: int | None, cfg: EvalConfig, tracker):
        self.method, self.embed_dim, self.cfg, self.tracker = method, embed_dim, cfg, tracker
        self.said, self.why = False, None

    def on_epoch(self, epoch, logs, state):
        c = self.cfg
        self.why = collapse(logs, self.embed_dim, c.collapse_rank, c.collapse_std, c.collapse_scale)
        if self.why and not self.said:
            self.said = True
            print(f"collapse: {self.method} at epoch {epoch + 1}: {self.why}", flush=True)
            self.tracker.set_tags({COLLAPSED_TAG: f"epoch {epoch + 1}: {self.why}"})


class StopOnCollapse(Callback):
    """Ends a collapsed run (``eval.stop_on_collapse``): last in the list, so the epoch is
    checkpointed and logged first and the collapse shows in MLflow."""

    def __init__(self, rule: CollapseRule):
        self.rule = rule

    def on_epoch(self, epoch, logs, state):
        if self.rule.why:
            raise Collapsed(f"{self.rule.method} collapsed at epoch {epoch + 1}: {self.rule.why}", epoch + 1,
                            self.rule.why)
