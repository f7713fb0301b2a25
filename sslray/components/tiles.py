"""Batched patch geometry for jigsaw and relative-position tasks.

An image is cut into a ``grid x grid`` lattice of cells; from each cell a ``tile x tile`` patch is
taken at a random offset inside the cell (the *gap* between neighbouring tiles is then at least
``cell - tile`` pixels and the offset is the *jitter*), so that tiles never share edges or
continue lines across borders — the low-level shortcuts of Noroozi & Favaro 2016 and Doersch et
al. 2015. All ops are tensor indexing on the whole batch.
"""

from __future__ import annotations

import torch


def tile_grid(x: torch.Tensor, grid: int = 3, tile: int | None = None, jitter: bool = True) -> torch.Tensor:
    """``(N, C, S, S)`` -> ``(N, grid*grid, C, tile, tile)``, tiles in row-major cell order.

    ``tile`` defaults to 85% of the cell (Noroozi & Favaro: 64-px tiles in 75-px cells). Without
    ``jitter`` every tile is centred in its cell.
    """
    n, c, h, w = x.shape
    cell = min(h, w) // grid
    tile = tile or max(1, int(cell * 0.85))
    if tile > cell:
        raise ValueError(f"tile {tile}px does not fit a {grid}x{grid} grid on {h}px images (cell {cell}px)")
    slack = cell - tile
    k = grid * grid
    if jitter and slack > 0:
        oy = torch.randint(0, slack + 1, (n, k), device=x.device)
        ox = torch.randint(0, slack + 1, (n, k), device=x.device)
    else:
        oy = ox = torch.full((n, k), slack // 2, device=x.device)
    cells = torch.arange(k, device=x.device)
    top = (cells // grid) * cell + oy  # (N, K)
    left = (cells % grid) * cell + ox
    ar = torch.arange(tile, device=x.device)
    rows = (top[..., None] + ar)[:, :, None, :, None]  # (N, K, 1, T, 1)
    cols = (left[..., None] + ar)[:, :, None, None, :]  # (N, K, 1, 1, T)
    b = torch.arange(n, device=x.device)[:, None, None, None, None]
    ch = torch.arange(c, device=x.device)[None, None, :, None, None]
    return x[b, ch, rows, cols]


def shuffle_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Reorder tiles: position ``i`` of the output holds tile ``perms[n, i]`` of the input."""
    idx = perms.long()[:, :, None, None, None].expand_as(tiles)
    return torch.gather(tiles, 1, idx)


def unshuffle_tiles(shuffled: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`shuffle_tiles` for the same ``perms``."""
    inverse = torch.argsort(perms.long(), dim=1)
    return shuffle_tiles(shuffled, inverse)


def assemble(tiles: torch.Tensor, grid: int) -> torch.Tensor:
    """``(N, grid*grid, C, T, T)`` -> ``(N, C, grid*T, grid*T)`` (tiles side by side, for viewing)."""
    n, k, c, t, _ = tiles.shape
    return tiles.view(n, grid, grid, c, t, t).permute(0, 3, 1, 4, 2, 5).reshape(n, c, grid * t, grid * t)
