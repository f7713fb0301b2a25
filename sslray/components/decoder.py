"""A light upsampling decoder: a trunk tap's feature map back to (a fraction of) image size.

Dense pretext tasks predict a map, not a label: colorization predicts ab colour bins per pixel
(Zhang et al. 2016), the context encoder predicts the missing pixels (Pathak et al. 2016). Both
use a deliberately small decoder so that the *trunk* has to learn the representation: a stack of
(bilinear x2 upsample, 3x3 conv, BN, ReLU) blocks that halves the channels at each step, then a
1x1 conv to the output channels. A last bilinear resize makes any size reachable (e.g. a 4x4 res5
map to 32x32 pixels in three steps, a 7x7 map to 224x224 in five).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UpsamplingDecoder(nn.Module):
    """``(N, in_ch, s, s)`` -> ``(N, out_ch, out_size, out_size)`` with ``ceil(log2(out_size / s))``
    upsampling blocks starting at ``width`` channels (at least 16 after halving)."""

    def __init__(self, in_ch: int, out_ch: int, in_size: int, out_size: int, width: int = 256):
        super().__init__()
        self.out_size = out_size
        steps = max(0, math.ceil(math.log2(out_size / in_size))) if in_size < out_size else 0
        layers, ch = [_block(in_ch, width)], width
        for _ in range(steps):
            nxt = max(16, ch // 2)
            layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), _block(ch, nxt)]
            ch = nxt
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(ch, out_ch, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        y = self.body(feat)
        if y.shape[-1] != self.out_size or y.shape[-2] != self.out_size:
            y = F.interpolate(y, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return self.out(y)
