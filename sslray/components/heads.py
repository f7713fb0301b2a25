"""Heads the methods put on the trunk: a linear classifier or small MLP, and the siamese tile head
of jigsaw-style tasks."""

from __future__ import annotations

import torch
from torch import nn


def linear_head(in_dim: int, out_dim: int, hidden: int | None = None) -> nn.Module:
    """A linear classifier, or a 2-layer MLP with BN when ``hidden`` is given."""
    if not hidden:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class TileHead(nn.Module):
    """Tiles of one image, each through the shared trunk (a siamese "context-free network"), then a
    shared per-tile layer, concatenated in the order the tiles come in, then an output head.

    Jigsaw (Noroozi & Favaro 2016): per-tile fc + ReLU, a classifier over the permutation subset.
    PIRL's g for jigsaw (Misra & van der Maaten 2019): per-tile linear projection, a linear map to
    the embedding."""

    def __init__(self, in_dim: int, tiles: int, tile_dim: int, out_dim: int, hidden: int = 0, relu: bool = True):
        super().__init__()
        self.tile = nn.Sequential(nn.Linear(in_dim, tile_dim), *([nn.ReLU(inplace=True)] if relu else []))
        self.out = linear_head(tiles * tile_dim, out_dim, hidden or None)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (N, K, D) -> (N, out_dim)
        return self.out(self.tile(feats).flatten(1))


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2, last_bn: bool = False) -> nn.Sequential:
    """``layers`` fully connected layers, each but the last followed by BN and ReLU (the projectors
    and predictors of BYOL, SimSiam, Barlow Twins and VICReg); ``last_bn``: BN after the last one
    too, without ReLU (SimSiam's projector ends in BN)."""
    widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
    parts: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == layers - 1
        parts.append(nn.Linear(a, b, bias=last and not last_bn))  # a bias before BN is redundant
        if not last:
            parts += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            parts.append(nn.BatchNorm1d(b))
    return nn.Sequential(*parts)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix): a 3-layer MLP with GELU
    and no BN to a ``bottleneck``, L2-normalised, then a weight-normalised linear layer without
    bias to ``out_dim`` (its weight norm fixed at 1: each output is a cosine, the paper's
    ``norm_last_layer``). Returns ``(logits, embedding)``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.Linear(bottleneck, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = nn.functional.normalize(self.mlp(x), dim=1)
        return nn.functional.linear(e, nn.functional.normalize(self.last.weight, dim=1)), e
