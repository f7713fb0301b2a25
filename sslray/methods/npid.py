"""Instance discrimination (NPID: Wu et al. 2018, "Unsupervised feature learning via
non-parametric instance discrimination"): every image is its own class. A 128-d L2-normalised
embedding of each image is pulled towards its own memory-bank entry and pushed from K entries
of other images, by noise-contrastive estimation (eqs. 4-7) at temperature 0.07."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.distributed import gather
from ..components.losses import embedding_std, info_nce, npid_nce_loss
from ..components.memory_bank import MemoryBank
from ..components.shuffle import shuffled
from ..config import MAX_DIM, MAX_TEMPERATURE, unbounded
from . import register
from ._contrastive import CROP, MAX_STRENGTH, NEGATIVES, photometric, resolve_negatives
from .base import Method, Strict

PAPER_NEGATIVES = 4096


class NPIDSettings(Strict):
    temperature: float = Field(0.07, gt=0, le=MAX_TEMPERATURE, description="tau of exp(v_i . v / tau)")
    embed_dim: int = Field(128, ge=2, le=MAX_DIM, description="embedding (and memory bank) dimension")
    negatives: int | None = Field(
        None, ge=1, json_schema_extra=unbounded(NEGATIVES), description="K noise samples per image; default the "
                                                                        f"paper's {PAPER_NEGATIVES} capped at N-1")
    momentum: float = Field(0.5, ge=0, lt=1, description="memory bank update momentum")
    loss: Literal["nce", "softmax"] = Field(
        "nce", description="nce = the paper's NCE against uniform noise with a Monte-Carlo normaliser Z "
                           "(see z_momentum); softmax = cross-entropy over positive + K")
    z_momentum: float = Field(
        0.9, ge=0, le=1, description="NCE normaliser: Z follows a moving average of its estimate n * mean "
                                     "exp(s / tau) on each batch's negatives; 1 = estimated once on the first "
                                     "batch, as in the paper (diverges while the bank fills: README)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation (0 = "
                                                                    "crop + flip only)")
    shared_negatives: bool = Field(
        True, description="one draw of K entries per step for the whole batch (a row's own entry swapped "
                          "out); False = a draw per row as in the paper's code, slower at large K")


@register
class NPID(Method):
    """Non-parametric instance discrimination with a memory bank and NCE (Wu et al. 2018)."""

    name = "npid"
    contrastive = True
    Settings = NPIDSettings

    @classmethod
    def check(cls, settings, info):
        resolve_negatives(settings.negatives, PAPER_NEGATIVES, info.num_train)

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.embed_dim
        self.negatives = resolve_negatives(settings.negatives, PAPER_NEGATIVES, info.num_train)
        self.head = torch.nn.Linear(trunk.out_dim, settings.embed_dim)
        self.bank = MemoryBank(info.num_train, settings.embed_dim, settings.momentum)
        # log of the NCE normaliser Z: first estimated on the first batch, as in the paper
        self.register_buffer("log_z", torch.tensor(float("nan")))

    def describe(self):
        return {"negatives": self.negatives}

    @classmethod
    def views(cls, settings, image_size):
        return (CROP,)

    def forward(self, views, y, idx):
        s = self.settings
        z = F.normalize(self.head(shuffled(self.trunk, photometric(views[0], s.strength))), dim=1)
        pos = (z * self.bank.get(idx)).sum(1).float()  # losses in float32 whatever the autocast dtype
        neg, = self.bank.negative_dots([z], idx, self.negatives, s.shared_negatives)
        neg = neg.float()
        if s.loss == "nce":
            self._track_z(neg.detach())
            loss = npid_nce_loss(pos, neg, s.temperature, self.log_z, self.info.num_train)
        else:
            loss = info_nce(pos, neg, s.temperature)
        self.bank.update(idx, z)
        acc = (pos.detach()[:, None] > neg.detach()).all(1).float().mean()  # own entry beats all K negatives
        out = {"loss": loss, "acc": acc, "embed_std": embedding_std(z)}
        if s.loss == "nce":
            out["log_z"] = self.log_z.clone()  # logged per epoch: where the normaliser went
        return out

    @torch.no_grad()
    def _track_z(self, neg: torch.Tensor) -> None:
        """Monte-Carlo estimate ``log Z = log(n * E[exp(s / tau)])`` from (at most 1,024 columns of)
        the batch's negatives, the same on every rank; kept once (``z_momentum=1``, the paper) or
        averaged in with ``z_momentum``. Z estimated once on the random initial bank is e^5-e^9 too
        small as soon as the bank holds the trunk's (at first nearly parallel) embeddings: the noise
        term then outweighs the positive hundreds of times over and training diverges (README). A
        slow average (0.99) lags the same rise in the first epoch; 0.9 follows it (README)."""
        s = self.settings
        sample = neg[:, :1024].flatten() / s.temperature
        local = torch.logsumexp(sample, 0) - math.log(sample.numel())  # log-space: exp(s/tau) overflows at small tau
        ranks = gather(local[None])
        est = torch.logsumexp(ranks, 0) - math.log(len(ranks)) + math.log(self.info.num_train)
        if torch.isnan(self.log_z) or s.z_momentum == 0:
            self.log_z.copy_(est)
        elif s.z_momentum < 1:
            self.log_z.copy_(torch.logaddexp(self.log_z + math.log(s.z_momentum), est + math.log(1 - s.z_momentum)))
