"""Frozen per-layer features of a trunk: one forward pass for all layers, pooled (Goyal et al. 2019)."""

from __future__ import annotations

import torch

from ..progress import bar
from .trunk import pool_features


def pooled_taps(trunk, x: torch.Tensor, layers, feature_dim: int) -> dict[str, torch.Tensor]:
    """``{layer: (B, D) float}``: the trunk's feature maps of ``x`` at ``layers``, each pooled to
    about ``feature_dim`` values (:func:`~sslray.models.trunk.pool_features`)."""
    return {layer: pool_features(f.float(), feature_dim) for layer, f in trunk.taps(x, layers).items()}


@torch.no_grad()
def extract_features(trunk, images: torch.Tensor, layers, feature_dim: int, batch_size: int = 256,
                     device=None, desc: str = "features") -> dict[str, torch.Tensor]:
    """``{layer: (N, D) float16}`` for uint8 ``images``, trunk in eval mode (BN running stats)."""
    device = device or next(trunk.parameters()).device
    was = trunk.training
    trunk.eval()
    chunks: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    starts = range(0, len(images), batch_size)
    for s in bar(starts, min_items=8, desc=desc, unit="batch"):
        x = images[s : s + batch_size].to(device).float().div_(255).contiguous(memory_format=torch.channels_last)
        for layer, f in pooled_taps(trunk, x, layers, feature_dim).items():
            chunks[layer].append(f.half().cpu())
    trunk.train(was)
    return {layer: torch.cat(c) for layer, c in chunks.items()}
