"""Baselines that frame every result: ``random`` (the floor) and ``supervised`` (the ceiling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from . import register
from ..components.augment import hflip, pad_crop
from ..config import MAX_IMAGE_SIZE, Seed
from ..errors import UserError
from .base import Method, Strict, accuracy


@register
class Random(Method):
    """Untrained trunk (random init): the floor of every per-layer transfer table."""

    name = "random"
    trains = False

    def forward(self, views, y, idx):
        raise RuntimeError("the random baseline is not trained")


def check_pad(method: str, pad: int, image_size: int) -> None:
    """A random-crop padding of more than half the image: most crops would be padding."""
    if pad > image_size // 2:
        raise UserError(f"{method}: pad={pad} is more than half the {image_size}-px images: "
                        f"use pad <= {image_size // 2}")


class SupervisedSettings(Strict):
    pad: int = Field(4, ge=0, le=MAX_IMAGE_SIZE // 2, description="random-crop padding in pixels (0 = no crop; at "
                                                                  "most half the image)")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    label_noise: float = Field(0.0, ge=0, lt=1, description="share of training images whose label is replaced by "
                                                            "another class, drawn uniformly; fixed per image")
    noise_seed: Seed = Field(0, description="label_noise: which images, and which wrong labels")


@register
class Supervised(Method):
    """Cross-entropy on the labels with crop + flip: the ceiling for the same trunk and data."""

    name = "supervised"
    Settings = SupervisedSettings
    needs_labels = True

    @classmethod
    def check_config(cls, settings, info):
        check_pad(cls.name, settings.pad, info.image_size)

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.head = torch.nn.Linear(trunk.out_dim, info.num_classes)
        # label noise, fixed per training index: the same on every rank, epoch and resume
        g = torch.Generator().manual_seed(settings.noise_seed)
        flip = torch.rand(info.num_train, generator=g) < settings.label_noise
        shift = torch.randint(1, max(2, info.num_classes), (info.num_train,), generator=g)  # never the true class
        self.register_buffer("noise_shift", torch.where(flip, shift, 0), persistent=False)

    def noisy(self, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The labels the run trains on: a flipped image's label moves by 1..C-1 classes (mod C)."""
        return (y + self.noise_shift[idx.to(self.noise_shift.device)]) % self.info.num_classes

    def describe(self):
        return {"label_noise_actual": round(float((self.noise_shift > 0).float().mean()), 4)} \
            if self.settings.label_noise else {}

    def forward(self, views, y, idx):
        x = views[0]
        if self.settings.pad:
            x = pad_crop(x, self.settings.pad)
        if self.settings.label_noise:
            y = self.noisy(y, idx)
        logits = self.head(self.trunk(hflip(x)))
        return {"loss": F.cross_entropy(logits, y, label_smoothing=self.settings.label_smoothing),
                "acc": accuracy(logits, y)}
