"""Rotation prediction (Gidaris et al. 2018, "Unsupervised representation learning by
predicting image rotations"): rotate each image by 0, 90, 180 and 270 degrees and classify
the rotation with a 4-way head on the trunk's pooled res5 features."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from . import register
from .base import Method, MethodSettings, accuracy, linear_head


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image: ``(4N, C, H, W)`` images and their labels.

    Label ``k`` means a rotation by ``k * 90`` degrees counter-clockwise (``torch.rot90``),
    images ordered rotation-major: ``[x, rot90(x), rot180(x), rot270(x)]``.
    """
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return rotated, labels


class RotationSettings(MethodSettings):
    rotations: Literal["all", "one"] = Field(
        "all", description="all = the 4 rotations of every image in each batch (as the paper); one = a random one")
    head_hidden: int = Field(0, ge=0, description="0 = linear head on pooled res5; >0 = MLP hidden size")


@register
class Rotation(Method):
    """Predict which of 4 rotations (0/90/180/270 deg) was applied (Gidaris et al. 2018)."""

    name = "rotation"
    Settings = RotationSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.head = linear_head(trunk.out_dim, 4, settings.head_hidden or None)

    def forward(self, x, y, idx):
        if self.settings.rotations == "all":
            xr, target = rotate_batch(x)
        else:
            target = torch.randint(0, 4, (len(x),), device=x.device)
            xr = torch.stack([torch.rot90(img, int(k), dims=(1, 2)) for img, k in zip(x, target)])
        logits = self.head(self.trunk(xr))
        return {"loss": F.cross_entropy(logits, target), "acc": accuracy(logits, target)}
