"""Inpainting with a context encoder (Pathak et al. 2016, "Context encoders: feature learning by
inpainting"): blank out a square region, let the trunk encode the rest, and have a decoder paint
the missing pixels back; the loss is the L2 reconstruction error over the masked region (eq. 1).

The region is the centre square of half the image side (the paper's central region, a quarter
of the area) or, with ``mask="random"``, a square of the same size at a random place per image
(the paper's random-block variant). It is filled with the data set's mean colour, which the trunk
normalises to zero. The decoder (:class:`UpsamplingDecoder`) reads res5 — every stage learns —
and predicts the whole image at full resolution; only the masked pixels count. We leave out
the adversarial loss (the paper's features are from the L2-only encoder too) and the
channel-wise fc, since a res5 cell already sees the whole 32-px image. ``psnr`` (dB, of the
masked region) is logged as the task's quality metric; the loss is the L2 error itself.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..components.decoder import UpsamplingDecoder
from ..config import MAX_CHANNELS
from . import register
from .base import Method, Strict


def square_mask(n: int, size: int, side: int, random: bool, device=None) -> torch.Tensor:
    """``(N, 1, size, size)`` bool masks, True inside a ``side``-px square: centred, or at a
    uniformly random place per image."""
    if random:
        top = torch.randint(0, size - side + 1, (n, 1, 1, 1), device=device)
        left = torch.randint(0, size - side + 1, (n, 1, 1, 1), device=device)
    else:
        top = left = torch.full((n, 1, 1, 1), (size - side) // 2, device=device)
    r = torch.arange(size, device=device)
    rows = (r.view(1, 1, -1, 1) >= top) & (r.view(1, 1, -1, 1) < top + side)
    cols = (r.view(1, 1, 1, -1) >= left) & (r.view(1, 1, 1, -1) < left + side)
    return rows & cols


def mask_image(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """The context the encoder sees: ``x`` with the masked pixels replaced by ``fill`` (per channel)."""
    return torch.where(mask, fill.to(x.dtype).expand_as(x), x)


def inpainting_loss(pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels and channels only (Pathak et al. eq. 1)."""
    m = mask.expand_as(x).to(pred.dtype)
    return (((pred - x) ** 2) * m).sum() / m.sum().clamp_min(1)


class InpaintingSettings(Strict):
    mask: Literal["centre", "random"] = Field("centre", description="centre square (paper's central region) "
                                              "or a random square per image (random block)")
    mask_fraction: float = Field(0.5, gt=0, lt=1, description="side of the masked square as a fraction of the "
                                 "image side (paper: 64 of 128 px)")
    decoder_dim: int = Field(256, ge=16, le=MAX_CHANNELS, description="channels of the decoder's first block")


@register
class Inpainting(Method):
    """Fill in a masked square from its context, L2 on the missing pixels (Pathak et al. 2016)."""

    name = "inpainting"
    Settings = InpaintingSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.side = max(1, int(info.image_size * settings.mask_fraction))
        c, _, s = trunk.tap_shapes(info.image_size)["res5"]
        self.decoder = UpsamplingDecoder(c, 3, s, info.image_size, settings.decoder_dim)

    def describe(self):
        return {"mask_px": self.side}

    def forward(self, views, y, idx):
        x = views[0]
        mask = square_mask(len(x), x.shape[-1], self.side, self.settings.mask == "random", x.device)
        context = mask_image(x, mask, self.trunk.input_mean)
        pred = torch.sigmoid(self.decoder(self.trunk.taps(context, ["res5"])["res5"]).float())
        loss = inpainting_loss(pred, x.float(), mask)
        return {"loss": loss, "psnr": (-10 * torch.log10(loss.detach().clamp_min(1e-10)))}
