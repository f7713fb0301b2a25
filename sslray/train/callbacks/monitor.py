"""The per-epoch kNN monitor as a callback (``eval.monitor``): ``monitor/knn_top1``."""

from __future__ import annotations

from ...config import EvalConfig
from ...eval.monitor import KnnMonitor
from . import Callback


class KnnMonitorCallback(Callback):
    """kNN top-1 of pooled res5 on a small fixed subset (:class:`~sslray.eval.monitor.KnnMonitor`)."""

    def __init__(self, trunk, train, test, cfg: EvalConfig):
        self.trunk, self.monitor = trunk, KnnMonitor(train, test, cfg)

    def on_epoch(self, epoch, logs, state):
        logs["monitor/knn_top1"] = self.monitor(self.trunk)
