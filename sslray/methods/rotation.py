"""Rotation prediction (Gidaris et al. 2018, "Unsupervised representation learning by
predicting image rotations"): rotate each image by 0, 90, 180 and 270 degrees and classify
the rotation with a 4-way head on the trunk's pooled res5 features."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.heads import linear_head
from ..components.rotation import rotate, rotate_batch
from ..config import MAX_DIM
from . import register
from .base import Method, Strict, accuracy


class RotationSettings(Strict):
    rotations: Literal["all", "one"] = Field(
        "all", description="all = the 4 rotations of every image in each batch (as the paper); one = a random one")
    head_hidden: int = Field(0, ge=0, le=MAX_DIM, description="0 = linear head on pooled res5; >0 = MLP hidden size")


@register
class Rotation(Method):
    """Predict which of 4 rotations (0/90/180/270 deg) was applied (Gidaris et al. 2018)."""

    name = "rotation"
    Settings = RotationSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.head = linear_head(trunk.out_dim, 4, settings.head_hidden or None)

    def forward(self, views, y, idx):
        x = views[0]
        if self.settings.rotations == "all":
            xr, target = rotate_batch(x)
        else:
            target = torch.randint(0, 4, (len(x),), device=x.device)
            xr = rotate(x, target)
        logits = self.head(self.trunk(xr))
        return {"loss": F.cross_entropy(logits, target), "acc": accuracy(logits, target)}
