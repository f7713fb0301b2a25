"""Pretext-invariant representation learning (PIRL: Misra & van der Maaten 2019).

Instead of predicting the transform (covariant), make the representation of a transformed
image ``I_t`` match the image's own: a head ``f`` embeds the image, a head ``g`` the transformed
image (for jigsaw: every tile through the trunk and a shared projection, concatenated in the
shuffled order, projected again), and with memory-bank representations ``m_I`` (updated with
``f(v_I)``) the loss is ``lambda L_NCE(m_I, g(v_It)) + (1 - lambda) L_NCE(m_I, f(v_I))``.

``similarity``: ``cosine`` (both unit vectors) or ``l2`` (negative squared distance of the
*unnormalised* embedding to the unit bank entries). Were both normalised, ``-|a - b|^2 =
2 cos(a, b) - 2`` and l2 would be cosine at ``tau / 2``; unnormalised, the logits are unbounded
and the temperature loses its meaning — the lecture's "why cosine".
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..components.heads import TileHead
from ..components.losses import embedding_std, info_nce, pirl_nce_loss
from ..components.memory_bank import MemoryBank
from ..components.permutations import hamming_permutations, hamming_stats
from ..components.rotation import rotate
from ..components.tiles import shuffle_tiles, tile_grid
from ..components.shuffle import shuffled as shuffled_bn
from ..config import MAX_DIM, MAX_TEMPERATURE, unbounded
from ..errors import UserError
from . import register
from ._contrastive import CROP, MAX_STRENGTH, NEGATIVES, photometric, resolve_negatives
from ._patches import MAX_PERMUTATIONS
from .base import Method, Strict

PAPER_NEGATIVES = 32000


class PIRLSettings(Strict):
    transform: Literal["jigsaw", "rotation", "jigsaw+rotation"] = Field(
        "jigsaw", description="the pretext transform t; jigsaw+rotation rotates by k*90 deg, then shuffles tiles")
    loss: Literal["nce", "softmax"] = Field(
        "nce", description="nce = k+1 binary problems (lecture's h); softmax = InfoNCE")
    similarity: Literal["cosine", "l2"] = "cosine"
    lam: float = Field(0.5, ge=0, le=1, description="lambda: weight of the transformed-image term")
    temperature: float = Field(0.07, gt=0, le=MAX_TEMPERATURE)
    negatives: int | None = Field(
        None, ge=1, json_schema_extra=unbounded(NEGATIVES), description="K per positive; default the paper's "
                                                                        f"{PAPER_NEGATIVES} capped at N-1")
    embed_dim: int = Field(128, ge=2, le=MAX_DIM)
    momentum: float = Field(0.5, ge=0, lt=1, description="memory bank update momentum")
    grid: int = Field(3, ge=2, le=4, description="jigsaw grid (3 = 9 tiles)")
    permutations: int | None = Field(
        None, ge=2, le=MAX_PERMUTATIONS, description="jigsaw: draw shuffles from a max-Hamming subset of this size "
                                                     "(None = any of grid^2!)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the image augmentation")
    shared_negatives: bool = Field(
        True, description="one draw of K bank entries per step for the whole batch (a row's own entry swapped "
                          "out); False = a draw per row as in the paper's code, slower at large K")


@register
class PIRL(Method):
    """Representations invariant to a pretext transform, via a memory bank and NCE (Misra & van der Maaten 2019)."""

    name = "pirl"
    contrastive = True
    Settings = PIRLSettings

    @classmethod
    def check(cls, settings, info):
        resolve_negatives(settings.negatives, PAPER_NEGATIVES, info.num_train)
        total = math.factorial(settings.grid * settings.grid)
        if settings.permutations is not None and settings.permutations > total:
            raise UserError(f"permutations={settings.permutations} is more than the {total} orderings of "
                            f"{settings.grid}x{settings.grid} tiles")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.embed_dim
        s = settings
        self.negatives = resolve_negatives(s.negatives, PAPER_NEGATIVES, info.num_train)
        self.f = nn.Linear(trunk.out_dim, s.embed_dim)
        # only the head the transform uses exists: DDP rejects parameters that get no gradient
        if "jigsaw" in s.transform:
            # tiles through the trunk, a shared linear projection per tile, concatenated, projected
            self.g = TileHead(trunk.out_dim, s.grid * s.grid, s.embed_dim, s.embed_dim, relu=False)
        else:
            self.g = nn.Linear(trunk.out_dim, s.embed_dim)
        if s.permutations is not None and "jigsaw" in s.transform:
            table = torch.from_numpy(hamming_permutations(s.permutations, s.grid * s.grid).astype("int64"))
            self.register_buffer("perm_table", table, persistent=False)
        else:
            self.perm_table = None
        self.bank = MemoryBank(info.num_train, s.embed_dim, s.momentum)

    def describe(self):
        out = {"negatives": self.negatives}
        if self.perm_table is not None:
            out.update(hamming_stats(self.perm_table.cpu().numpy()))
        return out

    def embed_transformed(self, x: torch.Tensor) -> torch.Tensor:
        """g(v_It) for a fresh random transform t of every image."""
        if "rotation" in self.settings.transform:
            x = rotate(x, torch.randint(0, 4, (len(x),), device=x.device))
        if "jigsaw" not in self.settings.transform:
            return self.g(shuffled_bn(self.trunk, x))
        tiles = tile_grid(x, self.settings.grid)
        if self.perm_table is not None:
            perms = self.perm_table[torch.randint(0, len(self.perm_table), (len(x),), device=x.device)]
        else:
            perms = torch.argsort(torch.rand(len(x), tiles.shape[1], device=x.device), dim=1)
        shuffled = shuffle_tiles(tiles, perms)
        n, k = shuffled.shape[:2]
        feats = shuffled_bn(self.trunk, shuffled.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        return self.g(feats.view(n, k, -1))

    def query(self, a: torch.Tensor) -> torch.Tensor:
        """The vector whose dot products with bank entries give s: a/|a| for cosine, a for l2."""
        return F.normalize(a, dim=1) if self.settings.similarity == "cosine" else a

    def similarity(self, a: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
        """s(a, m) from the dot products ``(B,)`` or ``(B, K)`` of :meth:`query` (a) with unit bank
        entries m: cosine is the dot product itself; ``-|a - m|^2 = 2 a.m - |a|^2 - 1``."""
        if self.settings.similarity == "l2":
            norm = a.pow(2).sum(1)
            dots = 2 * dots - (norm if dots.dim() == 1 else norm[:, None]) - 1
        return dots.float()  # losses in float32 whatever the autocast dtype

    @classmethod
    def views(cls, settings, image_size):
        return (CROP,)

    def forward(self, views, y, idx):
        s = self.settings
        x = photometric(views[0], s.strength)
        f = self.f(shuffled_bn(self.trunk, x))
        g = self.embed_transformed(x)
        m = self.bank.get(idx)
        qf, qg = self.query(f), self.query(g)
        neg_f, neg_g = self.bank.negative_dots([qf, qg], idx, self.negatives, s.shared_negatives)
        pos_f, pos_g = (qf * m.to(qf.dtype)).sum(1), (qg * m.to(qg.dtype)).sum(1)
        pos_g, neg_g = self.similarity(g, pos_g), self.similarity(g, neg_g)
        loss_fn = pirl_nce_loss if s.loss == "nce" else info_nce
        loss = (s.lam * loss_fn(pos_g, neg_g, s.temperature)
                + (1 - s.lam) * loss_fn(self.similarity(f, pos_f), self.similarity(f, neg_f), s.temperature))
        self.bank.update(idx, f)
        acc = (pos_g.detach()[:, None] > neg_g.detach()).all(1).float().mean()  # m_I nearest to g(v_It)
        return {"loss": loss, "acc": acc, "embed_std": embedding_std(f)}
