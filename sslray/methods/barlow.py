"""Barlow Twins (Zbontar et al. 2021, "Barlow Twins: self-supervised learning via redundancy
reduction"): two views through the trunk and a projector MLP; the cross-correlation matrix of
their batch-normalised embeddings over the global batch is pushed to the identity (its diagonal
to 1, its off-diagonal, weighted by lambda, to 0).

Departure: the projector is 3 layers as in the paper, but 2,048 wide by default instead of 8,192
(the CIFAR-scale width of solo-learn; ``proj_hidden``/``proj_dim`` set it back). The loss is
scaled by ``scale_loss``, 1/proj_dim by default: the paper trains with LARS, which ignores the
loss's scale; with SGD at the paper's scale the first steps here blow the trunk's weights up."""

from __future__ import annotations

from pydantic import Field

from ..components.heads import mlp
from ..components.losses import embedding_std
from ..components.negative_free import barlow_twins_loss
from ..config import MAX_DIM
from . import register
from ._contrastive import augmented_pair, CROP, MAX_STRENGTH
from .base import Method, Strict


class BarlowSettings(Strict):
    lambd: float = Field(5e-3, ge=0, le=1, description="lambda, the weight of the off-diagonal (redundancy "
                                                       "reduction) term (5e-3: the paper's; named as in its code)")
    proj_dim: int = Field(2048, ge=2, le=MAX_DIM, description="projector output dimension (the paper: 8192)")
    proj_hidden: int = Field(2048, ge=1, le=MAX_DIM, description="projector hidden sizes (the paper: 8192)")
    proj_layers: int = Field(3, ge=1, le=8, description="projector layers (the paper: 3)")
    scale_loss: float | None = Field(None, gt=0, le=1, description="factor of the loss (default 1/proj_dim: the "
                                                                    "paper trains with LARS, which ignores a loss's "
                                                                    "scale; SGD here does not)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation")


@register
class Barlow(Method):
    """Push the cross-correlation of two views' embeddings to the identity (Barlow Twins; Zbontar et al. 2021)."""

    name = "barlow"
    Settings = BarlowSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.proj_dim
        s = settings
        self.projection = mlp(trunk.out_dim, s.proj_hidden, s.proj_dim, layers=s.proj_layers)

    @classmethod
    def views(cls, settings, image_size):
        return (CROP, CROP)

    def forward(self, views, y, idx):
        s = self.settings
        both = augmented_pair(views, s.strength)
        z1, z2 = self.projection(self.trunk(both)).chunk(2)
        loss = (s.scale_loss or 1 / s.proj_dim) * barlow_twins_loss(z1, z2, s.lambd)
        return {"loss": loss, "embed_std": embedding_std(z1)}
