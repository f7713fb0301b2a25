"""Denoising autoencoder (Vincent et al. 2008, "Extracting and composing robust features with
denoising autoencoders"; Vincent et al. 2010, "Stacked denoising autoencoders"): corrupt the image,
let the trunk encode the corrupted image, and have a decoder reconstruct the clean one.

Corruptions (Vincent et al. 2010, sec. 4.2), each with one ``level``:

- ``gaussian``: additive isotropic Gaussian noise of std ``level`` (pixels in [0, 1]), clipped;
- ``mask``: masking noise, a fraction ``level`` of the pixel values (every channel of every pixel
  drawn apart, as the paper's input components) set to 0;
- ``salt_pepper``: a fraction ``level`` of the pixel values set to 0 or 1 with equal chance.

The decoder is the context encoder's :class:`~sslray.components.decoder.UpsamplingDecoder` on a
chosen tap (res5 by default, every stage learns; an earlier tap leaves the later stages out), no
skip connections (no U-Net: the reconstruction has to pass through the tap). The loss is the
mean squared error over every pixel (the paper's squared error for real-valued inputs); ``psnr``
(dB) of the reconstruction is logged.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.decoder import UpsamplingDecoder
from ..config import MAX_CHANNELS, Layer
from . import register
from ._ddp import every_parameter
from .base import Method, Strict


def corrupt(x: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    """The corrupted input: ``x`` in [0, 1] with ``kind`` noise at ``level`` (see the module docstring)."""
    if kind == "gaussian":
        return (x + level * torch.randn_like(x)).clamp(0, 1)
    hit = torch.rand_like(x) < level
    if kind == "mask":
        return x.masked_fill(hit, 0.0)
    if kind == "salt_pepper":
        salt = (torch.rand_like(x) < 0.5).to(x.dtype)
        return torch.where(hit, salt, x)
    raise ValueError(f"unknown corruption {kind!r}")


class DAESettings(Strict):
    noise: Literal["gaussian", "mask", "salt_pepper"] = Field(
        "mask", description="corruption: additive Gaussian, masking (to 0) or salt-and-pepper (Vincent et al. 2010)")
    level: float = Field(0.25, ge=0, le=1, description="gaussian: noise std (pixels in [0, 1]); mask and salt_pepper: "
                         "fraction of pixel values corrupted (Vincent et al. 2010 try 10-40 %; 25 %)")
    tap: Layer = Field("res5", description="the trunk stage the decoder reads (res5: every stage learns)")
    decoder_dim: int = Field(256, ge=16, le=MAX_CHANNELS, description="channels of the decoder's first block")


@register
class DAE(Method):
    """Reconstruct the clean image from a corrupted one through the trunk (denoising autoencoder; Vincent et al. 2008)."""

    name = "dae"
    Settings = DAESettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        c, _, s = trunk.tap_shapes(info.image_size)[settings.tap]
        self.decoder = UpsamplingDecoder(c, 3, s, info.image_size, settings.decoder_dim)

    def forward(self, views, y, idx):
        s = self.settings
        x = views[0]
        noisy = corrupt(x, s.noise, s.level)
        pred = torch.sigmoid(self.decoder(self.trunk.taps(noisy, [s.tap])[s.tap]).float())
        loss = F.mse_loss(pred, x.float())
        return {"loss": every_parameter(loss, self), "psnr": -10 * torch.log10(loss.detach().clamp_min(1e-10))}
