"""Trunks with named feature taps (conv1, res2, res3, res4, res5), their normalisation layers
(``trunk.norm``), and per-layer pooled features of a frozen trunk."""

from .features import extract_features, pooled_taps
from .norm import NORMS, SubBatchNorm2d, sub_batches
from .trunk import Trunk, build_trunk, pool_features, pool_size, resolve_stem, resolve_width

__all__ = ["NORMS", "SubBatchNorm2d", "Trunk", "build_trunk", "extract_features", "pool_features", "pool_size", "pooled_taps",
           "resolve_stem", "resolve_width", "sub_batches"]
