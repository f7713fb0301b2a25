"""Colorization (Zhang, Isola & Efros 2016, "Colorful image colorization"): from the lightness
channel alone, predict each pixel's colour as a distribution over quantised ab bins.

Loss: *classification*, not regression. Colour is multimodal (a shirt may be red or blue); an L2
regression on ab predicts the mean of the modes, a desaturated brown, and its gradient fades as
predictions reach that mean, whereas a cross-entropy over bins keeps every mode and goes on
pushing the trunk to tell the objects apart — which is the point of a pretext task. As in the
paper (sec. 2.1): bins of side 10 in the ab plane (the in-gamut ones, :func:`ab_bins`), soft-
encoded targets (5 nearest bins, Gaussian sigma 5) and class rebalancing (eq. 4, lambda 0.5)
against the training set's smoothed colour prior, computed once in :meth:`setup`.

The trunk sees a grey image: L / 100 replicated to 3 channels. A light decoder
(:class:`UpsamplingDecoder`) on one trunk tap (res5 by default, so that every stage learns; an
earlier tap trains only the stages up to it)
predicts the bin logits at 1/4 of the image size (8x8 at 32 px, 56x56 at 224 px, as the paper),
against ab average-pooled to that size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.decoder import UpsamplingDecoder
from ..components.lab import ab_bins, lightness_input, rebalancing_weights, rgb_to_lab, smoothed_prior, \
    soft_cross_entropy, soft_encode
from ..config import MAX_CHANNELS, MAX_IMAGE_SIZE, WHOLE, Layer, unbounded
from ..errors import UserError
from . import register
from ._ddp import every_parameter
from .base import Method, Strict


def colour_targets(x: torch.Tensor, out_size: int, grid: int = 10, neighbours: int = 5, sigma: float = 5.0):
    """Images in [0, 1] -> (the trunk's grey input, soft-encoded ``(bins, weights)`` of the ab
    channels average-pooled to ``out_size``)."""
    lab = rgb_to_lab(x)
    ab = F.adaptive_avg_pool2d(lab[:, 1:], out_size)
    return lightness_input(lab), soft_encode(ab, grid, neighbours, sigma)


class ColorizationSettings(Strict):
    grid: int = Field(10, ge=2, le=50, description="side of an ab bin (paper: 10, Q = 313 on ImageNet)")
    neighbours: int = Field(5, ge=1, le=25, description="bins in the soft-encoded target (paper: 5), of the 5x5 "
                                                        "candidate bins around a pixel's own")
    sigma: float = Field(5.0, gt=0, le=100, description="Gaussian width of the soft encoding and prior smoothing (ab "
                                                        "units: the gamut spans about 200)")
    rebalance: float = Field(0.5, gt=0, le=1, description="lambda of the class rebalancing (paper: 0.5); "
                             "1 = no rebalancing")
    tap: Layer = Field("res5", description="trunk stage the decoder reads")
    out_stride: int = Field(4, ge=1, le=MAX_IMAGE_SIZE, description="predict colours at image_size / out_stride "
                                                                    "(paper: 4); at most the image size")
    decoder_dim: int = Field(128, ge=16, le=MAX_CHANNELS, description="channels of the decoder's first block")
    prior_images: int = Field(2000, ge=1, json_schema_extra=unbounded(WHOLE),
                              description="training images used for the colour prior")


@register
class Colorization(Method):
    """Predict per-pixel quantised ab colours from lightness, classification (Zhang et al. 2016)."""

    name = "colorization"
    Settings = ColorizationSettings

    @classmethod
    def check_config(cls, settings, info):
        if settings.out_stride > info.image_size:
            raise UserError(f"colorization: out_stride={settings.out_stride} leaves no pixel of the "
                            f"{info.image_size}-px images to predict: use out_stride <= {info.image_size}")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        s = settings
        self.out_size = max(1, info.image_size // s.out_stride)
        shapes = trunk.tap_shapes(info.image_size)
        channels, side = shapes[s.tap][0], shapes[s.tap][-1]
        self.num_bins = len(ab_bins(s.grid))
        self.decoder = UpsamplingDecoder(channels, self.num_bins, side, self.out_size, s.decoder_dim)
        self.register_buffer("bin_weights", torch.ones(self.num_bins))

    @torch.no_grad()
    def setup(self, train):
        """Class rebalancing weights from the training set's colour distribution (eq. 4)."""
        s = self.settings
        counts = torch.zeros(self.num_bins)
        for chunk in train.subset(s.prior_images).images.split(250):
            _, (bins, _) = colour_targets(chunk.float() / 255, self.out_size, s.grid, 1, s.sigma)
            counts += torch.bincount(bins.flatten(), minlength=self.num_bins).float()
        self.bin_weights.copy_(rebalancing_weights(smoothed_prior(counts, s.grid, s.sigma), s.rebalance))

    def describe(self):
        return {"bins": self.num_bins, "out_px": self.out_size}

    def forward(self, views, y, idx):
        x = views[0]
        s = self.settings
        grey, (bins, weights) = colour_targets(x, self.out_size, s.grid, s.neighbours, s.sigma)
        logits = self.decoder(self.trunk.taps(grey, [s.tap])[s.tap])  # (N, Q, h, w)
        per_pixel = soft_cross_entropy(logits, bins, weights) * self.bin_weights[bins[:, 0]]
        acc = (logits.argmax(1) == bins[:, 0]).float().mean().detach()  # top-1 against the nearest bin
        return {"loss": every_parameter(per_pixel.mean(), self), "acc": acc}
