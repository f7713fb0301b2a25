"""BYOL (Grill et al. 2020, "Bootstrap your own latent"): an online network (trunk, projector,
predictor) predicts a target network's projection of another view of the image; the target is
an exponential moving average of the online trunk and projector and takes no gradient. The loss
is the normalised MSE, symmetrised over the two views (eq. 2 plus its swap).

The target's decay rate rises from ``ema`` to 1 on a cosine over the run's steps (sec. 3.2).
Default ``ema`` 0.99: the paper's CIFAR-scale value (appendix; 0.996 is its ImageNet one), since
the data here is 32 px and runs are short. Target weights are modules of the method, so they
checkpoint with it; they start as the online ones (identical on every rank, as the online weights
are) and every rank applies the same update after the same all-reduced step.

Departures: the augmentation is SimCLR's CIFAR one (no blur or solarisation, symmetric between
the views; see :func:`photometric`); the projector and predictor keep the paper's 4,096 / 256."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..components.heads import mlp
from ..components.losses import embedding_std
from ..components.negative_free import cosine_rise, normalized_mse
from ..components.queue import frozen_copy, momentum_update
from ..config import MAX_DIM
from . import register
from ._contrastive import augmented_pair, check_predictor, CROP, MAX_STRENGTH
from .base import Method, Strict


class BYOLSettings(Strict):
    ema: float = Field(0.99, ge=0, le=1, description="the target's base decay rate tau (0.99: the paper's CIFAR "
                                                     "value; 0.996 on ImageNet; 0: the target is the online network)")
    ema_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="cosine: tau rises from ema to 1 over the run's steps (the paper); constant: tau = ema")
    proj_dim: int = Field(256, ge=2, le=MAX_DIM, description="projection (and prediction) output dimension")
    proj_hidden: int = Field(4096, ge=1, le=MAX_DIM, description="projector hidden size")
    pred_hidden: int = Field(4096, ge=0, le=MAX_DIM, description="predictor hidden size")
    predictor: bool = Field(True, description="false: no predictor (with ema=0: the ablation that collapses)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation")


@register
class BYOL(Method):
    """An online network predicts an EMA target network's projection of another view (BYOL; Grill et al. 2020)."""

    name = "byol"
    Settings = BYOLSettings

    @classmethod
    def check_config(cls, settings, info):
        check_predictor(cls.name, settings, 4096)

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.proj_dim
        s = settings
        self.projection = mlp(trunk.out_dim, s.proj_hidden, s.proj_dim)
        self.predictor = mlp(s.proj_dim, s.pred_hidden, s.proj_dim) if s.predictor else torch.nn.Identity()
        self.target_trunk, self.target_projection = frozen_copy(trunk), frozen_copy(self.projection)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # checkpoints: a resumed run's tau

    def tau(self, step: int | None = None) -> float:
        """The target's decay rate at ``step`` (default: the current one); the base rate throughout
        when the run's length is not known."""
        step = int(self.step) if step is None else step
        s = self.settings
        if s.ema_schedule == "constant" or not self.info.total_steps:
            return s.ema
        return cosine_rise(s.ema, step, self.info.total_steps)

    @classmethod
    def views(cls, settings, image_size):
        return (CROP, CROP)

    def forward(self, views, y, idx):
        s = self.settings
        both = augmented_pair(views, s.strength)
        z = self.projection(self.trunk(both))
        p1, p2 = self.predictor(z).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target_projection(self.target_trunk(both)).chunk(2)
        loss = normalized_mse(p1, t2) + normalized_mse(p2, t1)  # each in [0, 4]
        return {"loss": loss, "embed_std": embedding_std(z.chunk(2)[0]), "tau": self.tau()}

    def after_step(self):
        tau = self.tau()
        momentum_update(self.trunk, self.target_trunk, tau)
        momentum_update(self.projection, self.target_projection, tau)
        self.step += 1
