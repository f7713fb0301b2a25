"""A per-epoch proxy of transfer: kNN top-1 on pooled res5 features of a small fixed subset.

Cheap, and comparable across methods (unlike their losses), so early stopping can rank trials of
different methods.
"""

from __future__ import annotations

from ..models import extract_features
from .probes import knn_top1


class KnnMonitor:
    def __init__(self, train, test, cfg):
        """``train``, ``test``: data sources; ``cfg``: the evaluation config (``monitor_size``
        training images, half as many test images, held in memory)."""
        self.train = train.subset(cfg.monitor_size)
        self.test = test.subset(max(10, cfg.monitor_size // 2))
        self.k, self.t = cfg.knn_k, cfg.knn_temperature

    def __call__(self, trunk) -> float:
        tr = extract_features(trunk, self.train.images, ["res5"], 1)["res5"]
        te = extract_features(trunk, self.test.images, ["res5"], 1)["res5"]
        return knn_top1(tr, self.train.labels, te, self.test.labels, self.train.num_classes, self.k, self.t)
