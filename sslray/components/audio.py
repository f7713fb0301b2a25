"""The audio subnetwork of audio-visual correspondence (Arandjelović & Zisserman 2017, "Look, Listen
and Learn", sec. 3, fig. 2): a spectrogram through four blocks of two conv3x3-BN-ReLU layers, 2x2
max pooling between blocks, then a max pool over the whole map. At ``width=1`` the blocks have the
paper's 64, 128, 256 and 512 channels. Usable alone: ``AudioNet()(spectrogram(wave, 4000))``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.video import log_mel


def spectrogram(wave: torch.Tensor, sample_rate: int, n_mels: int = 40) -> torch.Tensor:
    """Log-mel spectrograms ``(N, n_mels, frames)`` of waveforms ``(N, L)``, on the waveforms' device,
    in float32 outside any autocast (the STFT of bf16 sound would lose the quiet bands)."""
    with torch.autocast(wave.device.type, enabled=False):
        return log_mel(wave.detach().float(), sample_rate, n_mels)


class AudioNet(nn.Module):
    """``(N, M, T)`` log-mel spectrograms -> ``(N, out_dim)``, the max-pooled last block.

    A batch norm on the input standardises the log power (which spans some 20 nats) with learned
    running statistics; pooling rounds up, so a short window never shrinks to nothing."""

    def __init__(self, width: float = 1.0, blocks: int = 4, convs_per_block: int = 2):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm2d(1)]
        inp, base = 1, max(8, int(round(64 * width)))
        for b in range(blocks):
            out = base * 2 ** b
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(inp, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                inp = out
            if b < blocks - 1:  # after the last block the global max pool follows
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.out_dim = inp
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.features(spec.unsqueeze(1)), dim=(2, 3))
