"""An energy-based model of images trained contrastively (the energy-based-model lecture; Hinton
2002, "Training products of experts by minimizing contrastive divergence"; Tieleman 2008,
persistent CD; Du & Mordatch 2019, "Implicit generation and generalization in energy-based models").

The energy ``E(x)`` is a head on the trunk's pooled res5: ``energy_scale`` times the cosine of the
feature and a learned direction (bounded, see ``energy_scale``). Training pushes the energy of the
data down and that of negatives up, ``L = mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean
E(x-)^2)`` (Du & Mordatch, eq. 3 and their energy regulariser), and the negatives come from
``negatives``:

- ``data``: other images of the batch. For an energy of one image these are samples of the same
  distribution as the positives: push-up and push-down cancel in expectation and only the
  regulariser is left. It is the control of the negatives study (what the trunk learns with no
  model samples), not a way to train an EBM;
- ``cd``: contrastive divergence, ``langevin_steps`` steps of Langevin dynamics
  ``x <- clip(x - step_size grad_x E(x) + N(0, noise^2))`` started at the batch's images;
- ``pcd``: persistent chains, kept in a replay buffer of ``buffer`` images: each step continues
  chains drawn from it (a fraction ``reset`` started afresh from uniform noise, Du & Mordatch's 5 %)
  and writes them back.

While sampling, batch-norm layers keep their running statistics (momentum 0): the negatives must
not move what the evaluation normalises with. Logged per epoch: ``energy_data``, ``energy_neg``,
``energy_start`` (of the chains before Langevin) and ``acc`` (share of pairs with the image below its
negative); after training, ``negatives.png``, a grid of the last negatives.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..components.langevin import frozen_statistics, langevin
from ..components.replay_buffer import ReplayBuffer
from ..components.shuffle import shuffled
from ..errors import UserError
from . import register
from .base import Method, Strict

PAPER_BUFFER = 10000


class EBMSettings(Strict):
    negatives: Literal["data", "cd", "pcd"] = Field(
        "pcd", description="data: other images; cd: Langevin chains from the data; pcd: persistent chains in a buffer")
    langevin_steps: int = Field(5, ge=1, le=1000, description="Langevin steps per training step (Du & Mordatch: 60 on "
                                                              "CIFAR-10; 5 for CPU scale)")
    step_size: float = Field(10.0, gt=0, le=1000, description="lambda of the Langevin update (Du & Mordatch: 10)")
    noise: float = Field(0.005, ge=0, le=1, description="std of the Langevin noise, pixels in [0, 1] (Du & Mordatch: "
                                                        "0.005)")
    grad_clip: float = Field(0.01, gt=0, le=1, description="per-pixel clip of the energy gradient in a Langevin step "
                                                           "(0.01, as PyTorch reimplementations of Du & Mordatch), so "
                                                           "that one step moves a pixel by at most step_size x this")
    buffer: int | None = Field(None, ge=1, le=10 * PAPER_BUFFER,
                               description=f"pcd: chains kept; default the paper's {PAPER_BUFFER} capped at the "
                                           "training set size; at most ten times the paper's")
    reset: float = Field(0.05, ge=0, le=1, description="pcd: share of chains restarted from uniform noise each step")
    alpha: float = Field(1.0, ge=0, le=1000, description="weight of the energy-magnitude regulariser (Du & Mordatch: "
                                                         "1)")
    energy_scale: float = Field(5.0, gt=0, le=1000, description="energies are bounded to +-energy_scale: the cosine "
                                                                "of the pooled res5 and a learned direction, times "
                                                                "this. Du & Mordatch keep an unbounded energy small "
                                                                "with spectral norm and Adam at lr 1e-4; under the "
                                                                "shared SGD at lr 0.1 an unbounded linear head "
                                                                "diverged here within 6 steps")


def ebm_loss(e_pos: torch.Tensor, e_neg: torch.Tensor, alpha: float) -> torch.Tensor:
    """Contrastive divergence with Du & Mordatch's regulariser on the energies' magnitude."""
    return e_pos.mean() - e_neg.mean() + alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())


@register
class EBM(Method):
    """Push the energy of images down and of negatives (other images, CD or persistent chains) up (Du & Mordatch 2019)."""

    name = "ebm"
    Settings = EBMSettings
    contrastive = True

    @classmethod
    def buffer_size(cls, settings, info) -> int:
        return settings.buffer or min(PAPER_BUFFER, info.num_train)

    @classmethod
    def check_config(cls, settings, info):
        if settings.negatives == "pcd" and settings.buffer is not None and settings.buffer < info.batch_size:
            raise UserError(f"ebm: a PCD buffer of {settings.buffer} chains is smaller than the batch of {info.batch_size}: "
                            f"a step draws a distinct chain for every image (buffer >= optim.batch_size)")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.direction = nn.Parameter(torch.randn(trunk.out_dim) / trunk.out_dim ** 0.5)
        shape = (3, info.image_size, info.image_size)
        self.chains = ReplayBuffer(self.buffer_size(settings, info), shape, settings.reset) \
            if settings.negatives == "pcd" else None
        self.last_negatives: torch.Tensor | None = None

    def describe(self):
        return {"buffer": self.chains.size if self.chains is not None else 0}

    def energy_of(self, features: torch.Tensor) -> torch.Tensor:
        """``E = energy_scale * cos(features, direction)``, one per image."""
        cos = F.normalize(features.float(), dim=1) @ F.normalize(self.direction.float(), dim=0)
        return self.settings.energy_scale * cos

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return self.energy_of(self.trunk(x))

    def sample(self, x: torch.Tensor, s: EBMSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
        if s.negatives == "data":
            return x.roll(1, 0), None
        slots = None
        if s.negatives == "pcd":
            slots, start, _ = self.chains.draw(len(x))
        else:
            start = x
        with frozen_statistics(self.trunk):
            neg, e_start = langevin(self.energy, start, s.langevin_steps, s.step_size, s.noise, s.grad_clip)
        if slots is not None:
            self.chains.store(slots, neg)
        return neg.contiguous(memory_format=torch.channels_last), e_start

    def forward(self, views, y, idx):
        s, x = self.settings, views[0]
        neg, e_start = self.sample(x, s)
        self.last_negatives = neg[:64].detach()
        e = self.energy_of(shuffled(self.trunk, torch.cat([x, neg])))  # one batch: shared BN statistics
        e_pos, e_neg = e.chunk(2)
        out = {"loss": ebm_loss(e_pos, e_neg, s.alpha), "energy_data": e_pos.detach().mean(),
               "energy_neg": e_neg.detach().mean(), "acc": (e_pos.detach() < e_neg.detach()).float().mean()}
        if e_start is not None:
            out["energy_start"] = e_start.mean()
        return out

    def figures(self) -> dict:
        if self.last_negatives is None:
            return {}
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        imgs = self.last_negatives.float().clamp(0, 1).cpu()
        cols = 8
        rows = (len(imgs) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9 + 0.4), dpi=120, squeeze=False)
        for ax, i in zip(axes.flat, range(rows * cols)):
            ax.axis("off")
            if i < len(imgs):
                ax.imshow(imgs[i].permute(1, 2, 0).numpy())
        s = self.settings
        how = "other images" if s.negatives == "data" else f"{s.negatives}, {s.langevin_steps} Langevin steps"
        fig.suptitle(f"ebm negatives ({how})", fontsize=8)
        fig.tight_layout()
        return {"negatives.png": fig}
