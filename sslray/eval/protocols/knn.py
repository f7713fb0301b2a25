"""A weighted kNN vote per layer (Wu et al. 2018, eq. 9) on the cosine similarity of pooled frozen
features: each of the ``k`` nearest training images votes for its class with weight
exp(s / temperature); top-1 on the test split. Runs on the images :class:`Scan` holds in memory."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from ...config import MAX_KNN, MAX_TEMPERATURE, Strict
from . import Protocol, Result, register, timed


class KnnSettings(Strict):
    k: PositiveInt = Field(20, le=MAX_KNN, description="neighbours in the weighted kNN vote (Wu et al. 2018; the "
                                                       "paper: 200); at most the training images vote")
    temperature: float = Field(0.07, gt=0, le=MAX_TEMPERATURE)


@register
class Knn(Protocol):
    name = "knn"
    Settings = KnnSettings
    title = "kNN"
    over_epochs = True
    renamed = {"knn_k": "k", "knn_temperature": "temperature"}

    def run(self, scan) -> list[Result]:
        from ..probes import knn_top1

        feats, s = scan.features(), self.settings
        out = []
        for layer in scan.cfg.layers:
            with timed(scan.timings, self.name):
                top1 = knn_top1(feats["train"][layer], scan.train_set.labels, feats["test"][layer],
                                scan.test_set.labels, scan.num_classes, s.k, s.temperature)
            out.append(Result(self.name, "top1", top1, layer, n=len(scan.test_set)))
        return out
