"""Rotation by multiples of 90 degrees, batched: the one implementation behind the rotation pretext
task (Gidaris et al. 2018), PIRL's rotation transform and the rotation invariance measure."""

from __future__ import annotations

import torch


def rotate(x: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Image ``i`` of ``(N, C, S, S)`` rotated by ``k[i] * 90`` degrees counter-clockwise
    (``torch.rot90`` over the spatial dims); an int ``k`` rotates every image alike."""
    if isinstance(k, int):
        return torch.rot90(x, k, dims=(2, 3))
    k = k.to(x.device) % 4
    out = torch.empty_like(x)
    for r in range(4):  # one batched rot90 per angle present, not one per image
        sel = k == r
        if bool(sel.any()):
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    return out


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image: ``(4N, C, H, W)`` images and their labels.

    Label ``k`` means a rotation by ``k * 90`` degrees counter-clockwise, images ordered
    rotation-major: ``[x, rot90(x), rot180(x), rot270(x)]``.
    """
    rotated = torch.cat([rotate(x, k) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(len(x))
    return rotated, labels
