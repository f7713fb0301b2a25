"""Where a network looks: occlusion maps (Zeiler & Fergus 2014, "Visualizing and understanding
convolutional networks", sec. 4.2) and the pointing game (Zhang et al. 2016, "Top-down neural
attention by excitation backprop", sec. 5.1).

:func:`occlusion_map` hides each cell of a grid with a grey square (a quarter of the image's side,
at an eighth-side stride) and records how much a score of the image drops; :func:`pointing_game`
says whether each map's strongest cell lies on a recorded object (a disc), beside the share of cells
that do (a random cell's hit rate); :func:`heat_map` spreads the cells' drops back over the pixels;
:func:`localisation_figure` draws a few. Any image scorer works: a correspondence log-odds (AVC), a
class logit, an energy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

GREY = 0.5
OCCLUDED_PER_PASS = 512  # occluded images per pass of the scorer: a few large batches, not 49 small


def occlusion_grid(size: int) -> tuple[int, int, int]:
    """``(square side, stride, cells per side)`` of the occlusion grid of ``size``-pixel images."""
    side, stride = max(1, round(size / 4)), max(1, round(size / 8))
    return side, stride, len(range(0, size - side + 1, stride))


def occlusion_map(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  per_pass: int = OCCLUDED_PER_PASS) -> tuple[torch.Tensor, int, int]:
    """The drop of ``score`` when a grey square hides each cell: ``(drops (B, n, n), square side, stride)``.

    ``score`` maps ``k * B`` images, cell-major (rows ``j * B .. (j + 1) * B`` are the batch ``x``
    with the ``j``-th hidden cell), to their ``k * B`` scores; row ``i`` of each block belongs to
    item ``i`` of ``x``, whatever else the scorer pairs it with."""
    size = x.shape[-1]
    side, stride, _ = occlusion_grid(size)
    cells = range(0, size - side + 1, stride)

    def scores(images: torch.Tensor, copies: int = 1) -> torch.Tensor:  # -> (B, copies)
        return score(images).view(copies, len(x)).T

    base = scores(x)[:, 0]
    corners = [(r, c) for r in cells for c in cells]
    drops = torch.empty(len(x), len(corners), device=x.device)
    cells_per_pass = max(1, per_pass // len(x))
    for first in range(0, len(corners), cells_per_pass):
        group = corners[first:first + cells_per_pass]
        hidden = x.repeat(len(group), 1, 1, 1)  # cell-major: the k-th cell's copies are rows k*B .. (k+1)*B
        for k, (r, c) in enumerate(group):
            hidden[k * len(x):(k + 1) * len(x), :, r:r + side, c:c + side] = GREY
        drops[:, first:first + len(group)] = base[:, None] - scores(hidden, len(group))
    return drops.view(len(x), len(cells), len(cells)), side, stride


def pointing_game(drops: torch.Tensor, side: int, stride: int, centre: torch.Tensor,
                  radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(hit (B,) bool, inside (B, n, n) bool)``: whether each map's strongest-drop cell centre lies
    within ``radius`` pixels of the object's ``centre`` (pixels, ``(column, row)``), and which cell
    centres do (``inside.mean()`` is the chance of a random cell)."""
    n = drops.shape[1]
    mid = torch.arange(n) * stride + side / 2  # cell centres (pixels)
    rows, cols = torch.meshgrid(mid, mid, indexing="ij")
    inside = (cols[None] - centre[:, 0, None, None]) ** 2 + (rows[None] - centre[:, 1, None, None]) ** 2 \
        <= radius[:, None, None] ** 2  # (B, n, n)
    hit = inside.flatten(1).gather(1, drops.flatten(1).argmax(1, keepdim=True)).squeeze(1)
    return hit, inside


def heat_map(drops: torch.Tensor, side: int, stride: int, size: int) -> torch.Tensor:
    """``(B, size, size)``: every pixel the mean drop of the cells whose square covers it."""
    n = drops.shape[1]
    heat = torch.zeros(len(drops), size, size)
    cover = torch.zeros(size, size)
    for i in range(n):
        for j in range(n):
            r, c = i * stride, j * stride
            heat[:, r:r + side, c:c + side] += drops[:, i, j, None, None]
            cover[r:r + side, c:c + side] += 1
    return heat / cover.clamp_min(1)


def localisation_figure(images: torch.Tensor, heat: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor,
                        hit: torch.Tensor, title: str, shown: int = 6):
    """``shown`` images side by side, each under its heat map, the object's centre (+) and disc,
    titled hit or miss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, shown, figsize=(shown * 1.6, 2.0), dpi=120, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(images):
            continue
        ax.imshow(images[k].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.imshow(heat[k].numpy(), cmap="inferno", alpha=0.5)
        cx, cy = (centre[k] - 0.5).tolist()  # imshow puts pixel i's centre at i
        ax.plot(cx, cy, "+", color="cyan", markersize=8, mew=1.5)
        ax.add_patch(plt.Circle((cx, cy), float(radius[k]), fill=False, color="cyan", lw=0.8))
        ax.set_title("hit" if hit[k] else "miss", fontsize=7)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout()
    return fig
