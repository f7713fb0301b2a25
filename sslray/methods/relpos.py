"""Relative patch position (Doersch, Gupta & Efros 2015, "Unsupervised visual representation
learning by context prediction"): take the centre patch of a 3x3 lattice as the *anchor* and one
of its 8 neighbours as the *query*; both go through the shared trunk (siamese), their features
are concatenated and a small MLP classifies where the query lies (8 classes, :data:`OFFSETS`).

Shortcuts blocked as in the paper: a gap between patches and a random jitter of each patch
(:func:`tile_grid`), and colour dropping (keep one channel, the rest noise), because chromatic
aberration tells a patch's place in the frame. The paper's patches are 96 px with a 48-px gap, a
patch 2/3 of its 144-px cell: the default ``tile_fraction``. On 32-px images that is 6-px patches
in 10-px cells (``tile_resize`` upsamples them; see :mod:`sslray.methods._patches`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.heads import linear_head
from ..config import MAX_DIM
from . import register
from ._patches import PatchSettings, check_tiles, cut_tiles, input_size, input_view, tile_size
from .base import Method, accuracy

#: label k -> (row, column) offset of the query from the anchor, row-major around the centre
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
#: label k -> the query's cell in the row-major 3x3 lattice (the anchor is cell 4)
NEIGHBOUR_CELLS = tuple((1 + dy) * 3 + (1 + dx) for dy, dx in OFFSETS)
ANCHOR_CELL = 4
#: Doersch et al.: 96-px patches with 48-px gaps, a 3x3 lattice of 144-px cells
PAPER_INPUT = 3 * 144


def relpos_pairs(tiles: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor and query patches for ``labels``: ``tiles`` ``(N, 9, C, T, T)`` (row-major cells),
    ``labels`` ``(M,)`` with ``M`` a multiple of ``N`` (image ``i % N`` for row ``i``) ->
    ``(M, C, T, T)`` anchors and queries, the query at ``OFFSETS[label]`` from the anchor."""
    n = len(tiles)
    image = torch.arange(len(labels), device=tiles.device) % n
    cells = torch.tensor(NEIGHBOUR_CELLS, device=tiles.device)[labels]
    return tiles[image, ANCHOR_CELL], tiles[image, cells]


class RelPosSettings(PatchSettings):
    pairs: Literal["one", "all"] = Field(
        "one", description="one = a random neighbour per image (as the paper); all = all 8 neighbours")
    tile_fraction: float = Field(2 / 3, gt=0, le=1, description="patch side as a fraction of its cell "
                                 "(paper: 96-px patches, 48-px gap)")
    channel_drop: float = Field(1.0, ge=0, le=1, description="probability of keeping one colour channel of a "
                                "patch and replacing the others by noise (paper: always)")
    head_hidden: int = Field(1024, ge=1, le=MAX_DIM, description="hidden size of the MLP on the concatenated pair "
                                                                 "(paper fc7: 4096)")


@register
class RelPos(Method):
    """Predict where a patch lies relative to the centre patch, 8 ways (Doersch et al. 2015)."""

    name = "relpos"
    Settings = RelPosSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.head = linear_head(2 * trunk.out_dim, len(OFFSETS), settings.head_hidden)

    @classmethod
    def views(cls, settings, image_size):
        return input_view(settings, image_size, PAPER_INPUT)

    @classmethod
    def check(cls, settings, info):
        size = input_size(settings, info.image_size, PAPER_INPUT)
        check_tiles("relpos", 3, settings, info, size, settings.tile_fraction)

    def describe(self):
        size = input_size(self.settings, self.info.image_size, PAPER_INPUT)
        tile = tile_size(size, 3, self.settings.tile_fraction)
        return {"input_px": size, "tile_px": tile, "trunk_tile_px": self.settings.tile_resize or tile}

    def forward(self, views, y, idx):
        x = views[0]
        n = len(x)
        tiles = cut_tiles(x, 3, self.settings, self.settings.tile_fraction)
        if self.settings.pairs == "all":
            target = torch.arange(len(OFFSETS), device=x.device).repeat_interleave(n)
        else:
            target = torch.randint(0, len(OFFSETS), (n,), device=x.device)
        _, query = relpos_pairs(tiles, target)
        feats = self.trunk(torch.cat([tiles[:, ANCHOR_CELL], query]))  # each anchor once, one BN batch
        f_anchor, f_query = feats[:n].repeat(len(target) // n, 1), feats[n:]
        logits = self.head(torch.cat([f_anchor, f_query], 1))
        return {"loss": F.cross_entropy(logits, target), "acc": accuracy(logits, target)}
