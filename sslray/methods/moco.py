"""MoCo v2 (He et al. 2020; Chen et al. 2020, "Improved baselines with momentum contrastive
learning"): queries from the trunk + MLP head, keys from a momentum copy of both, InfoNCE of
each query against its key and a queue of K keys of earlier batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..components.losses import embedding_std, info_nce
from ..components.queue import KeyQueue, frozen_copy, momentum_update
from ..components.shuffle import shuffled
from ..config import MAX_DIM, MAX_TEMPERATURE, unbounded
from . import register
from ._contrastive import CROP, MAX_STRENGTH, NEGATIVES, photometric, resolve_negatives
from .base import Method, Strict

PAPER_QUEUE = 65536


class MoCoSettings(Strict):
    temperature: float = Field(0.2, gt=0, le=MAX_TEMPERATURE, description="tau of InfoNCE (0.2 in MoCo v2)")
    momentum: float = Field(0.999, ge=0, lt=1, description="key encoder EMA momentum")
    queue: int | None = Field(
        None, ge=1, json_schema_extra=unbounded(NEGATIVES), description="K keys in the queue; default the paper's "
                                                                        f"{PAPER_QUEUE} capped at N-1")
    embed_dim: int = Field(128, ge=2, le=MAX_DIM)
    head_hidden: int = Field(0, ge=0, le=MAX_DIM, description="MLP head hidden size (0 = the trunk's output size)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation")


@register
class MoCo(Method):
    """Momentum contrast: a momentum key encoder and a queue of negatives (MoCo v2)."""

    name = "moco"
    contrastive = True
    Settings = MoCoSettings

    @classmethod
    def check(cls, settings, info):
        resolve_negatives(settings.queue, PAPER_QUEUE, info.num_train, "queue")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.embed_dim
        s = settings
        hidden = s.head_hidden or trunk.out_dim
        # MoCo v2's head: Linear -> ReLU -> Linear, no BN (keys and queries must not share batch statistics)
        self.head = nn.Sequential(nn.Linear(trunk.out_dim, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, s.embed_dim))
        self.key_trunk, self.key_head = frozen_copy(trunk), frozen_copy(self.head)
        self.queue = KeyQueue(resolve_negatives(s.queue, PAPER_QUEUE, info.num_train, "queue"), s.embed_dim)

    def describe(self):
        return {"queue": self.queue.size}

    @classmethod
    def views(cls, settings, image_size):
        return (CROP, CROP)  # the query's and the key's

    def forward(self, views, y, idx):
        s = self.settings
        q = F.normalize(self.head(shuffled(self.trunk, photometric(views[0], s.strength))), dim=1)
        with torch.no_grad():  # shuffled BN (trunk.norm=shuffle_batch) as in MoCo, for the keys and the queries
            k = F.normalize(self.key_head(shuffled(self.key_trunk, photometric(views[1], s.strength))), dim=1)
        pos = (q * k).sum(1).float()  # losses in float32 whatever the autocast dtype
        neg = (q @ self.queue.snapshot().T).float()
        loss = info_nce(pos, neg, s.temperature)
        self.queue.enqueue(k)
        acc = (pos.detach()[:, None] > neg.detach()).all(1).float().mean()
        return {"loss": loss, "acc": acc, "embed_std": embedding_std(q)}

    def after_step(self):
        momentum_update(self.trunk, self.key_trunk, self.settings.momentum)
        momentum_update(self.head, self.key_head, self.settings.momentum)
