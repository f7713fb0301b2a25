"""Frozen per-layer features: one forward pass for all layers, pooled, cached on disk as float16."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ..progress import bar

from ..models.trunk import pool_features


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
        for layer, f in trunk.taps(x, layers).items():
            chunks[layer].append(pool_features(f.float(), feature_dim).half().cpu())
    trunk.train(was)
    return {layer: torch.cat(c) for layer, c in chunks.items()}


class FeatureCache:
    """Features of one (trunk state, data split) on disk: ``<dir>/<split>-<layer>.npy``.

    ``key`` identifies the trunk weights and the data; a cache with another key is rebuilt.
    """

    def __init__(self, root: str | Path, key: str):
        self.root = Path(root)
        self.key = key

    def _path(self, split: str, layer: str) -> Path:
        return self.root / f"{split}-{layer}.npy"

    def get(self, split: str, layers) -> dict[str, torch.Tensor] | None:
        stamp = self.root / "KEY"
        if not stamp.exists() or stamp.read_text() != self.key:
            return None
        if not all(self._path(split, layer).exists() for layer in layers):
            return None
        return {layer: torch.from_numpy(np.load(self._path(split, layer))) for layer in layers}

    def put(self, split: str, feats: dict[str, torch.Tensor]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.root / "KEY"
        if not stamp.exists() or stamp.read_text() != self.key:
            for old in self.root.glob("*.npy"):
                old.unlink()
            stamp.write_text(self.key)
        for layer, f in feats.items():
            tmp = self.root / f".{split}-{layer}.tmp.npy"
            np.save(tmp, f.numpy())
            tmp.replace(self._path(split, layer))
