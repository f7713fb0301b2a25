"""Jigsaw puzzles (Noroozi & Favaro 2016, "Unsupervised learning of visual representations by
solving jigsaw puzzles"): cut the image into 3x3 tiles with gaps and jitter, shuffle them by one
permutation of a fixed subset P, pass every tile through the shared trunk (a siamese "context-free
network"), concatenate the tile features in their shuffled order and classify which of the |P|
permutations was applied.

P is chosen greedily for maximal Hamming distance (:func:`hamming_permutations`, seeded and cached
on disk); its minimum and mean distance are logged with the run, since both move transfer.

Shortcuts blocked: the gap and jitter between tiles (no continuing edges), per-tile colour jitter
and grey tiles (no matching colour statistics; the paper normalises each tile and uses 30% grey
images). On 32-px images the tiles are 85% of 10-px cells, 8 px, which the CIFAR stem keeps at
8x8 through res2; ``tile_resize`` upsamples them (see :mod:`sslray.methods._patches`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.heads import TileHead
from ..components.permutations import hamming_permutations, hamming_stats
from ..components.tiles import shuffle_tiles
from ..config import MAX_DIM, Seed
from ..errors import UserError
from . import register
from ._patches import (MAX_PERMUTATIONS, MAX_TILE_GRID, PatchSettings, check_tiles, cut_tiles, input_size, input_view,
                       tile_size)

#: Noroozi & Favaro's code: images resized to 256, a 255-px crop, 3x3 cells of 85 px, 64-px tiles
PAPER_INPUT, PAPER_TILE = 255, 64
from .base import Method, accuracy


class JigsawSettings(PatchSettings):
    tile_fraction: float | None = Field(None, gt=0, le=1, description="tile side as a fraction of its cell; "
                                        "default: the paper's 64/85 from a 255-px input, 0.85 on smaller inputs "
                                        "(8-px tiles of 10-px cells at 32 px)")
    permutations: int = Field(1000, ge=2, le=MAX_PERMUTATIONS, description="size of the permutation subset P (paper: "
                                                                           "1000), at most (grid^2)!")
    grid: int = Field(3, ge=2, le=MAX_TILE_GRID, description="tiles per side (paper: 3)")
    perm_seed: Seed = Field(0, description="seed of the greedy maximal-Hamming permutation choice")
    tile_dim: int = Field(512, ge=1, le=MAX_DIM, description="per-tile fc size before concatenation (paper fc6: 1024)")
    head_hidden: int = Field(1024, ge=0, le=MAX_DIM, description="hidden size of the head on the concatenated tiles "
                                                                 "(paper fc7: 4096); 0 = linear")
    colour_jitter: float = Field(0.8, ge=0, le=1, description="probability of colour jitter, drawn per tile")
    grayscale: float = Field(0.3, ge=0, le=1, description="probability of a grey tile (paper: 30% grey images)")


@register
class Jigsaw(Method):
    """Classify which of P max-Hamming permutations shuffled 3x3 tiles (Noroozi & Favaro 2016)."""

    name = "jigsaw"
    Settings = JigsawSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        k = settings.grid ** 2
        perms = hamming_permutations(settings.permutations, k, seed=settings.perm_seed)
        self.register_buffer("perms", torch.as_tensor(perms, dtype=torch.long), persistent=False)
        # per-tile fc + ReLU (shared), concatenated in tile order, a classifier over P
        self.head = TileHead(trunk.out_dim, k, settings.tile_dim, settings.permutations, settings.head_hidden)

    @classmethod
    def views(cls, settings, image_size):
        return input_view(settings, image_size, PAPER_INPUT)

    @staticmethod
    def fraction(settings, size: int) -> float:
        if settings.tile_fraction:
            return settings.tile_fraction
        return PAPER_TILE / (PAPER_INPUT // 3) if size >= PAPER_INPUT else 0.85

    @classmethod
    def check(cls, settings, info):
        size = input_size(settings, info.image_size, PAPER_INPUT)
        check_tiles("jigsaw", settings.grid, settings, info, size, cls.fraction(settings, size))
        k = settings.grid ** 2
        if k <= 20 and settings.permutations > math.factorial(k):  # 21! exceeds any subset we could draw
            raise UserError(f"jigsaw: permutations={settings.permutations} is more than the "
                            f"{k}! = {math.factorial(k)} orders of a {settings.grid}x{settings.grid} grid")

    def describe(self):
        s = self.settings
        size = input_size(s, self.info.image_size, PAPER_INPUT)
        tile = tile_size(size, s.grid, self.fraction(s, size))
        return {**hamming_stats(self.perms.cpu().numpy()), "input_px": size, "tile_px": tile,
                "trunk_tile_px": s.tile_resize or tile}

    def forward(self, views, y, idx):
        x = views[0]
        s = self.settings
        tiles = cut_tiles(x, s.grid, s, self.fraction(s, x.shape[-1]))  # (N, K, C, T, T)
        n, k = tiles.shape[:2]
        target = torch.randint(0, len(self.perms), (n,), device=x.device)
        shuffled = shuffle_tiles(tiles, self.perms[target])
        feats = self.trunk(shuffled.flatten(0, 1)).view(n, k, -1)
        logits = self.head(feats)
        return {"loss": F.cross_entropy(logits, target), "acc": accuracy(logits, target)}
