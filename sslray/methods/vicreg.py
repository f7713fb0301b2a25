"""VICReg (Bardes et al. 2022, "VICReg: variance-invariance-covariance regularization for
self-supervised learning"): two views through the trunk and an expander MLP; the loss is a
weighted sum of the views' mean squared distance (invariance), a hinge keeping every dimension's
std above gamma = 1 (variance) and the squared off-diagonal covariances (covariance), the last two
over the global batch.

Departure: the expander is 3 layers as in the paper, but 2,048 wide by default instead of 8,192
(``proj_hidden``/``proj_dim`` set it back); the loss is scaled by ``scale_loss`` = 1/25 (at the
paper's scale SGD, unlike the paper's LARS, diverges in its first steps here). Each weight may be
0 (the paper's ablations); all three at 0 leave nothing to learn and are refused."""

from __future__ import annotations

from pydantic import Field

from ..components.heads import mlp
from ..components.losses import embedding_std
from ..components.negative_free import VICREG_GAMMA, vicreg_terms
from ..config import MAX_DIM
from ..errors import UserError
from . import register
from ._contrastive import augmented_pair, CROP, MAX_STRENGTH
from .base import Method, Strict

#: the weights' bound: 100 is four times the paper's largest (25)
MAX_WEIGHT = 100.0


class VICRegSettings(Strict):
    invariance: float = Field(25.0, ge=0, le=MAX_WEIGHT, description="lambda, weight of the invariance term")
    variance: float = Field(25.0, ge=0, le=MAX_WEIGHT, description="mu, weight of the variance term (0: the "
                                                                   "ablation that collapses)")
    covariance: float = Field(1.0, ge=0, le=MAX_WEIGHT, description="nu, weight of the covariance term")
    proj_dim: int = Field(2048, ge=2, le=MAX_DIM, description="expander output dimension (the paper: 8192)")
    proj_hidden: int = Field(2048, ge=1, le=MAX_DIM, description="expander hidden sizes (the paper: 8192)")
    proj_layers: int = Field(3, ge=1, le=8, description="expander layers (the paper: 3)")
    scale_loss: float = Field(0.04, gt=0, le=1, description="factor of the whole loss (1/25: the invariance "
                                                            "weighs 1; the paper trains with LARS, which ignores a "
                                                            "loss's scale, SGD here does not)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation")


@register
class VICReg(Method):
    """Invariance, variance and covariance terms on two views' embeddings, no negatives (VICReg; Bardes et al. 2022)."""

    name = "vicreg"
    Settings = VICRegSettings

    @classmethod
    def check_config(cls, settings, info):
        if settings.invariance == settings.variance == settings.covariance == 0:
            raise UserError("vicreg: all three weights (invariance, variance, covariance) are 0: the loss is "
                            "constant and nothing trains; keep at least one above 0")

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
        t = vicreg_terms(z1, z2)
        loss = s.invariance * t["invariance"] + s.variance * t["variance"] + s.covariance * t["covariance"]
        loss = s.scale_loss * loss
        # the raw spread against the one the variance term asks for: the collapse rule's train/embed_scale
        scale = z1.detach().float().std(0).mean() / VICREG_GAMMA
        return {"loss": loss, "embed_std": embedding_std(z1), "embed_scale": scale,
                **{k: v.detach() for k, v in t.items()}}
