"""Baselines that frame every result: ``random`` (the floor) and ``supervised`` (the ceiling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from . import register
from ..components.augment import hflip, pad_crop
from .base import Method, Strict, accuracy


@register
class Random(Method):
    """Untrained trunk (random init): the floor of every per-layer transfer table."""

    name = "random"
    trains = False

    def forward(self, views, y, idx):
        raise RuntimeError("the random baseline is not trained")


class SupervisedSettings(Strict):
    pad: int = Field(4, ge=0, description="random-crop padding in pixels (0 = no crop)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)


@register
class Supervised(Method):
    """Cross-entropy on the labels with crop + flip: the ceiling for the same trunk and data."""

    name = "supervised"
    Settings = SupervisedSettings
    needs_labels = True

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.head = torch.nn.Linear(trunk.out_dim, info.num_classes)

    def forward(self, views, y, idx):
        x = views[0]
        if self.settings.pad:
            x = pad_crop(x, self.settings.pad)
        logits = self.head(self.trunk(hflip(x)))
        return {"loss": F.cross_entropy(logits, y, label_smoothing=self.settings.label_smoothing),
                "acc": accuracy(logits, y)}
