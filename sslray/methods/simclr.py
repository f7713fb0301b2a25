"""SimCLR (Chen et al. 2020, "A simple framework for contrastive learning of visual
representations"): two augmented views of every image, a 2-layer projection MLP, and NT-Xent
over the other 2N - 2 views of the global batch as negatives."""

from __future__ import annotations

import torch
from pydantic import Field

from ..components.heads import linear_head
from ..components.losses import embedding_std, nt_xent
from ..components.shuffle import shuffled
from ..config import MAX_DIM, MAX_TEMPERATURE
from . import register
from ._contrastive import augmented_pair, CROP, MAX_STRENGTH
from .base import Method, Strict


class SimCLRSettings(Strict):
    temperature: float = Field(0.5, gt=0, le=MAX_TEMPERATURE, description="tau of NT-Xent (0.5: the paper's CIFAR-10 "
                                                                          "setting)")
    proj_dim: int = Field(128, ge=2, le=MAX_DIM, description="projection output dimension")
    proj_hidden: int = Field(0, ge=0, le=MAX_DIM, description="projection hidden size (0 = the trunk's output size)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength s (0.5 for CIFAR-10, 1.0 "
                                                                    "for ImageNet)")


@register
class SimCLR(Method):
    """Contrast two augmented views against the rest of the global batch (NT-Xent; Chen et al. 2020)."""

    name = "simclr"
    contrastive = True
    Settings = SimCLRSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.proj_dim
        # Linear -> BN -> ReLU -> Linear; evaluation uses the trunk, before the projection
        self.projection = linear_head(trunk.out_dim, settings.proj_dim, settings.proj_hidden or trunk.out_dim)

    @classmethod
    def views(cls, settings, image_size):
        return (CROP, CROP)

    def forward(self, views, y, idx):
        s = self.settings
        both = augmented_pair(views, s.strength)
        z1, z2 = self.projection(shuffled(self.trunk, both)).chunk(2)
        loss = nt_xent(z1, z2, s.temperature)
        with torch.no_grad():  # does each view find its partner among the local batch's views?
            z = torch.nn.functional.normalize(torch.cat([z1, z2]).float(), dim=1)
            sim = (z @ z.T).fill_diagonal_(-2)
            partner = torch.arange(len(z), device=z.device).roll(len(z1))
            acc = (sim.argmax(1) == partner).float().mean()
        return {"loss": loss, "acc": acc, "embed_std": embedding_std(z1)}
