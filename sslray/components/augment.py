"""Batched image augmentations on float tensors in [0, 1], shaped (N, C, H, W).

Every op draws its randomness per image from torch's generator and runs as a few tensor
operations on the whole batch, on whatever device the batch is on: no per-image Python loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def hflip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(len(x), device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def pad_crop(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """CIFAR-style random crop: reflect-pad by ``pad`` then crop back, a shift per image."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return xp[batch, chan, rows, cols]


def random_resized_crop(x: torch.Tensor, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), size: int | None = None) -> torch.Tensor:
    """Inception-style crop of a random area and aspect ratio, resized back (bilinear)."""
    n, _, h, w = x.shape
    size = size or h
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(*scale)
    logr = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(logr)
    cw = torch.sqrt(area * r).clamp(max=1.0)  # fraction of the width
    ch = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, device=dev) * 2 - 1) * (1 - cw)  # centre in [-1, 1] keeping the crop inside
    cy = (torch.rand(n, device=dev) * 2 - 1) * (1 - ch)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = cw, cx, ch, cy
    grid = F.affine_grid(theta, (n, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, broadcast back to three channels."""
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def color_jitter(x: torch.Tensor, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p: float = 0.8) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue jitter, applied with probability ``p``.

    Hue is rotated in YIQ space (a rotation of the chroma plane), the batched equivalent of an
    HSV hue shift.
    """
    n, dev = len(x), x.device

    def factor(s):
        return torch.empty(n, 1, 1, 1, device=dev).uniform_(1 - s, 1 + s)

    out = x * factor(brightness)
    mean = grayscale(out).mean((2, 3), keepdim=True)
    out = (out - mean) * factor(contrast) + mean
    gray = grayscale(out)
    out = (out - gray) * factor(saturation) + gray
    if hue > 0:
        to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=dev)
        angle = torch.empty(n, device=dev).uniform_(-hue, hue) * 2 * math.pi
        rot = torch.zeros(n, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
        rot[:, 2, 1], rot[:, 2, 2] = torch.sin(angle), torch.cos(angle)
        m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (N, 3, 3)
        out = torch.einsum("nij,njhw->nihw", m, out)
    out = out.clamp(0, 1)
    keep = torch.rand(n, device=dev) < p
    return torch.where(keep[:, None, None, None], out, x)


def random_grayscale(x: torch.Tensor, p: float = 0.2) -> torch.Tensor:
    g = torch.rand(len(x), device=x.device) < p
    return torch.where(g[:, None, None, None], grayscale(x), x)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square images resized to ``size`` px (antialiased when shrinking)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1]).clamp(0, 1)


def cut_views(x: torch.Tensor, views) -> list[torch.Tensor]:
    """The views a method declares (:class:`~sslray.data.views.View`, sizes resolved), cut from a
    batch of square images on their device: random-resized crops, or the images resized."""
    return [random_resized_crop(x, scale=v.scale, ratio=v.ratio, size=v.size) if v.random else resize(x, v.size)
            for v in views]
