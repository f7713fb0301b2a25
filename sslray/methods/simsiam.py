"""SimSiam (Chen & He 2021, "Exploring simple siamese representation learning"): one encoder
(trunk + projection MLP) on two views, a predictor MLP on one branch, and the negative cosine of
the prediction to the other branch's projection, which takes no gradient (the stop-gradient).

Defaults are the paper's CIFAR-10 ones (appendix, "CIFAR experiments"): a 2-layer projection of
2,048 ending in BN, a predictor of hidden size 512. ``stop_gradient: false`` and ``predictor:
false`` are the paper's collapse ablations (sec. 4.1, 4.2: both collapse)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..components.heads import mlp
from ..components.losses import embedding_std
from ..components.negative_free import negative_cosine
from ..config import MAX_DIM
from . import register
from ._contrastive import augmented_pair, check_predictor, CROP, MAX_STRENGTH
from .base import Method, Strict


class SimSiamSettings(Strict):
    proj_dim: int = Field(2048, ge=2, le=MAX_DIM, description="projection (and prediction) output dimension")
    proj_hidden: int = Field(2048, ge=1, le=MAX_DIM, description="projection hidden size")
    pred_hidden: int = Field(512, ge=0, le=MAX_DIM, description="predictor hidden size (the paper's bottleneck: "
                                                                "1/4 of proj_dim)")
    predictor: bool = Field(True, description="false: no predictor, the paper's ablation (collapses)")
    stop_gradient: bool = Field(True, description="false: gradients through both branches, the paper's ablation "
                                                  "(collapses)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation")


@register
class SimSiam(Method):
    """Predict one view's projection from the other's, with a stop-gradient and no negatives (Chen & He 2021)."""

    name = "simsiam"
    Settings = SimSiamSettings

    @classmethod
    def check_config(cls, settings, info):
        check_predictor(cls.name, settings, 512)

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.proj_dim
        s = settings
        self.projection = mlp(trunk.out_dim, s.proj_hidden, s.proj_dim, layers=2, last_bn=True)
        self.predictor = mlp(s.proj_dim, s.pred_hidden, s.proj_dim) if s.predictor else torch.nn.Identity()

    @classmethod
    def views(cls, settings, image_size):
        return (CROP, CROP)

    def forward(self, views, y, idx):
        s = self.settings
        both = augmented_pair(views, s.strength)
        z = self.projection(self.trunk(both))
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        if s.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()
        loss = (negative_cosine(p1, z2) + negative_cosine(p2, z1)) / 2  # eq. 2: symmetric, in [-1, 1]
        return {"loss": loss, "embed_std": embedding_std(z1)}
