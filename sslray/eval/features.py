"""Frozen per-layer features cached on disk as float16 (extracted by
:func:`sslray.models.extract_features`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


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
