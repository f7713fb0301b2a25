"""A per-epoch proxy of transfer: kNN top-1 on pooled res5 features of a small fixed subset.

Cheap, and comparable across methods (unlike their losses), so early stopping can rank trials of
different methods.
"""

from __future__ import annotations

from ..config import EvalConfig
from ..models import extract_features
from .probes import knn_top1


class KnnMonitor:
    def __init__(self, train, test, cfg: EvalConfig):
        """``train``, ``test``: data sources; ``cfg``: the evaluation config (``monitor_size``
        training images, half as many test images, held in memory)."""
        self.train = train.subset(cfg.monitor_size)
        self.test = test.subset(max(10, cfg.monitor_size // 2))
        from .protocols import settings_of

        knn = settings_of(cfg, "knn")  # the kNN protocol's vote (eval.knn.k, eval.knn.temperature)
        self.k, self.t = knn.k, knn.temperature

    def __call__(self, trunk) -> float:
        tr = extract_features(trunk, self.train.images, ["res5"], 1)["res5"]
        te = extract_features(trunk, self.test.images, ["res5"], 1)["res5"]
        return knn_top1(tr, self.train.labels, te, self.test.labels, self.train.num_classes, self.k, self.t)


class HealthMonitor:
    """Per-epoch representation health (:mod:`sslray.eval.health`) on pooled res5 features of the
    first ``cfg.health_size`` training images (class-balanced) and of one fixed augmented view of
    each: a random-resized crop (scale 0.3-1) and a horizontal flip drawn once from ``cfg.seed``."""

    def __init__(self, train, cfg: EvalConfig):
        import torch
        import torch.nn.functional as F

        images = train.subset(cfg.health_size).images
        g = torch.Generator().manual_seed(cfg.seed)
        n, _, h, w = images.shape
        out = torch.empty_like(images)
        for i in range(n):
            scale = 0.3 + 0.7 * float(torch.rand((), generator=g))
            ch, cw = max(1, round(h * scale ** 0.5)), max(1, round(w * scale ** 0.5))
            top = int(torch.randint(0, h - ch + 1, (), generator=g))
            left = int(torch.randint(0, w - cw + 1, (), generator=g))
            crop = images[i : i + 1, :, top : top + ch, left : left + cw].float()
            crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
            if float(torch.rand((), generator=g)) < 0.5:
                crop = crop.flip(3)
            out[i] = crop.round().clamp(0, 255).to(images.dtype)[0]
        self.images, self.augmented = images, out

    def __call__(self, trunk) -> dict[str, float]:
        from .health import representation_health

        f = extract_features(trunk, self.images, ["res5"], 1)["res5"]  # pooled to 1x1: (N, C)
        f_aug = extract_features(trunk, self.augmented, ["res5"], 1)["res5"]
        return representation_health(f, f_aug)
