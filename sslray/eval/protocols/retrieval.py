"""Nearest neighbours per layer (:mod:`sslray.eval.retrieval`): recall@1/@8 and precision@8 of the
nearest training images by cosine similarity of pooled features, the same beside an untrained trunk
(the floor), what the neighbours share beyond the class on data that records factors, and a figure
per layer of queries and their neighbours. Runs on the images :class:`Scan` holds in memory."""

from __future__ import annotations

from . import Protocol, Result, register


@register
class Retrieval(Protocol):
    name = "retrieval"

    def run(self, scan) -> list[Result]:
        from ..retrieval import retrieval

        c = scan.cfg
        out, figures = retrieval(scan.trunk, scan.train_set, scan.test_set, scan.features(), c.layers, c.feature_dim,
                                 scan.seed, scan.device, scan.title, self.name)
        scan.figures.update(figures)
        return out

    @classmethod
    def lines(cls, results: list[Result]) -> list[str]:
        floor = {r.layer: r.value for r in results if r.protocol == cls.name and r.metric == "floor_precision_at_8"}
        cells = [f"{r.layer} {100 * r.value:.1f} ({100 * floor[r.layer]:.1f})" for r in results
                 if r.protocol == cls.name and r.metric == "precision_at_8" and r.layer in floor]
        return ["retrieval precision@8 (untrained): " + "  ".join(cells)] if cells else []
