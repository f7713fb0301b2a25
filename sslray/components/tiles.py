"""Batched patch geometry for jigsaw and relative-position tasks.

An image is cut into a ``grid x grid`` lattice of cells; from each cell a ``tile x tile`` patch is
taken at a random offset inside the cell (the *jitter*). The *gap* between neighbouring tiles is
``cell - tile`` pixels on average (0 to twice that with jitter, exactly that without), so that
tiles rarely share edges or continue lines across borders — the low-level shortcuts of Noroozi &
Favaro 2016 (64-px tiles at random offsets in 75-px cells) and Doersch et al. 2015. All ops are
tensor indexing on the whole batch.
"""

from __future__ import annotations

import torch


def tile_grid(x: torch.Tensor, grid: int = 3, tile: int | None = None, jitter: bool = True) -> torch.Tensor:
    """``(N, C, S, S)`` -> ``(N, grid*grid, C, tile, tile)``, tiles in row-major cell order.

    The lattice of ``grid x grid`` cells of ``S // grid`` px is centred in the image. ``tile``
    defaults to 85% of the cell (Noroozi & Favaro: 64-px tiles in 75-px cells); ``tile`` equal to
    the cell cuts the cells themselves. Without ``jitter`` every tile is centred in its cell.
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
    top = (h - grid * cell) // 2 + (cells // grid) * cell + oy  # (N, K)
    left = (w - grid * cell) // 2 + (cells % grid) * cell + ox
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


def drop_channels(x: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """Colour dropping (Doersch et al. 2015, sec. 3.1): with probability ``p`` per image, keep one
    random channel and replace the other two with Gaussian noise of 1/100 the kept channel's std
    (around its mean), so that chromatic aberration cannot tell where a patch was in the frame.

    ``x`` is ``(N, 3, H, W)``; pass tiles flattened to ``(N * K, 3, T, T)`` to drop per tile.
    """
    n, c = x.shape[:2]
    keep = torch.randint(0, c, (n,), device=x.device)
    kept = x[torch.arange(n, device=x.device), keep][:, None]  # (N, 1, H, W)
    mean = kept.mean((2, 3), keepdim=True)
    std = kept.std((2, 3), keepdim=True, unbiased=False) if kept[0].numel() > 1 else torch.zeros_like(mean)
    noise = mean + torch.randn_like(x) * std / 100
    is_kept = torch.arange(c, device=x.device)[None, :] == keep[:, None]  # (N, C)
    dropped = torch.where(is_kept[:, :, None, None], x, noise.to(x.dtype)).clamp(0, 1)
    apply = torch.rand(n, device=x.device) < p
    return torch.where(apply[:, None, None, None], dropped, x)
