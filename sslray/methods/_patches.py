"""What the patch tasks (jigsaw, relative position) share: tile settings, the size check, and
cutting tiles with the low-level shortcuts blocked.

How patch tasks work on 32-px images: the image is cut into a 3x3 lattice of 10-px cells and each
tile is a fraction of its cell (8 px at jigsaw's 0.85, 6 px at relpos' 2/3), at a random offset
(jitter) so that the gap between tiles varies. The CIFAR stem (stride 1) keeps an 8-px tile at
8x8 up to res2 and 1x1 at res5, so every tap sees it; ``tile_resize`` optionally upsamples tiles
(e.g. to 16 px) so that the trunk sees them at the scale of whole images, at 4x the compute.

On 224-px data the tasks take their input at the size their paper cuts it (``input_size``, a
centre view the data source cuts from the original image): jigsaw 255 px (3x3 cells of 85 px,
64-px tiles; Noroozi & Favaro's code), relative position 432 px (cells of 144 px, 96-px patches
with 48-px gaps; Doersch et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..config import MAX_IMAGE_SIZE
from ..components.augment import color_jitter, random_grayscale
from ..components.tiles import drop_channels, tile_grid
from ..data.views import View
from ..errors import UserError
from .base import DataInfo, Strict

#: smallest tile (px) we cut: below it even the first 3x3 convolutions see mostly padding
MIN_TILE = 4
#: tiles per side: the head concatenates grid^2 tiles, and a 9x9 grid of 4-px tiles already needs 36+ px
MAX_TILE_GRID = 8
#: permutation subsets: Goyal et al. 2019 scaled jigsaw to 10,000 (the greedy choice takes seconds)
MAX_PERMUTATIONS = 10_000


class PatchSettings(Strict):
    input_size: int | None = Field(None, ge=16, le=MAX_IMAGE_SIZE,
                                   description="px of the image the tiles are cut from; default: the paper's on "
                                               "224-px data or larger, the data's size below")
    tile_fraction: float = Field(0.85, gt=0, le=1, description="tile side as a fraction of its grid cell "
                                 "(Noroozi & Favaro: 64 of 75 px); the rest is gap and jitter room")
    jitter: bool = Field(True, description="random tile offset inside its cell (False: centred)")
    tile_resize: int = Field(0, ge=0, le=MAX_IMAGE_SIZE, description="resize tiles to this many px before the trunk "
                                                                     "(0 = keep)")
    colour_jitter: float = Field(0.0, ge=0, le=1, description="probability of colour jitter, drawn per tile")
    grayscale: float = Field(0.0, ge=0, le=1, description="probability of a grey tile")
    channel_drop: float = Field(0.0, ge=0, le=1, description="probability of keeping one colour channel of a "
                                "tile and replacing the others by noise (Doersch et al.)")


def tile_size(image_size: int, grid: int, fraction: float) -> int:
    return int(image_size // grid * fraction)


def input_size(settings: PatchSettings, image_size: int, paper: int) -> int:
    """The side of the view the tiles are cut from: ``settings.input_size``, else ``paper`` on
    224-px data or larger, else the data's size."""
    return settings.input_size or (paper if image_size >= 224 else image_size)


def input_view(settings: PatchSettings, image_size: int, paper: int) -> tuple[View, ...]:
    return (View(input_size(settings, image_size, paper)),)


def check_tiles(method: str, grid: int, settings: PatchSettings, info: DataInfo, size: int,
                fraction: float) -> None:
    tile = tile_size(size, grid, fraction)
    if tile < MIN_TILE:
        raise UserError(f"{method}: a {grid}x{grid} tile grid does not fit {size}px images "
                        f"({size // grid}px cells give {tile}px tiles, at least {MIN_TILE}px needed); "
                        f"use a smaller grid, a larger tile_fraction or larger images (data.image_size)")
    if 0 < settings.tile_resize < MIN_TILE:
        raise UserError(f"{method}: tile_resize={settings.tile_resize} is below {MIN_TILE}px (0 keeps the cut size)")


def cut_tiles(x: torch.Tensor, grid: int, s: PatchSettings, fraction: float) -> torch.Tensor:
    """``(N, C, S, S)`` -> ``(N, grid*grid, C, T, T)`` tiles with jitter, per-tile colour
    augmentations (so that no tile's colour statistics reveal its neighbours) and resizing."""
    tiles = tile_grid(x, grid, tile_size(x.shape[-1], grid, fraction), jitter=s.jitter)
    n, k = tiles.shape[:2]
    flat = tiles.flatten(0, 1)
    if s.colour_jitter:
        flat = color_jitter(flat, p=s.colour_jitter)
    if s.grayscale:
        flat = random_grayscale(flat, p=s.grayscale)
    if s.channel_drop:
        flat = drop_channels(flat, p=s.channel_drop)
    if s.tile_resize and s.tile_resize != flat.shape[-1]:
        flat = F.interpolate(flat, size=(s.tile_resize, s.tile_resize), mode="bilinear", align_corners=False)
    return flat.view(n, k, *flat.shape[1:])
