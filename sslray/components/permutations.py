"""Jigsaw permutation subsets chosen by maximal Hamming distance (Noroozi & Favaro 2016, Alg. 1).

The greedy rule: start from a random permutation of the 9! candidates, then repeatedly add the
candidate whose *minimum* Hamming distance to the already chosen set is largest (ties broken by
the larger mean distance, then by a seeded random order). A larger minimum distance makes the
permutations easier to tell apart; the paper shows that the subset's size and its minimum
distance both move transfer performance.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _all_permutations(n_tiles: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n_tiles))), dtype=np.uint8)


def hamming_permutations(size: int, n_tiles: int = 9, seed: int = 0, cache: bool = True) -> np.ndarray:
    """``(size, n_tiles)`` permutations of ``range(n_tiles)`` chosen greedily by maximal Hamming
    distance; seeded and cached on disk (``$SSLRAY_CACHE``)."""
    total = math.factorial(n_tiles)
    if not 2 <= size <= total:
        raise ValueError(f"permutation subset size must be in [2, {n_tiles}!={total}], got {size}")
    path = None
    if cache:
        from ..data import cache_dir

        path = cache_dir() / f"perms-hamming-{n_tiles}-{size}-seed{seed}.npy"
        if path.exists():
            return np.load(path)
    cands = _all_permutations(n_tiles)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(cands))  # seeded random tie-breaking
    cands = cands[order]
    chosen = np.empty(size, np.int64)
    chosen[0] = 0
    min_d = (cands != cands[0]).sum(1).astype(np.int16)
    sum_d = min_d.astype(np.int32).copy()
    min_d[0] = -1
    for i in range(1, size):
        best = np.flatnonzero(min_d == min_d.max())
        j = best[np.argmax(sum_d[best])]
        chosen[i] = j
        d = (cands != cands[j]).sum(1)
        np.minimum(min_d, d, out=min_d, where=min_d >= 0)
        sum_d += d
        min_d[chosen[: i + 1]] = -1
    perms = cands[chosen]
    if path is not None:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, perms)
        tmp.replace(path)
    return perms


def hamming_stats(perms: np.ndarray) -> dict[str, float]:
    """Minimum and mean pairwise Hamming distance of a permutation set (logged with the run)."""
    p = np.asarray(perms)
    mins, total, pairs = [], 0, 0
    for s in range(0, len(p), 512):  # chunked: 10k x 10k x 9 would not fit at once
        d = (p[s : s + 512, None, :] != p[None, :, :]).sum(-1)
        idx = np.arange(s, min(s + 512, len(p)))
        d[np.arange(len(idx)), idx] = 10**6
        mins.append(d.min())
        total += d.sum() - 10**6 * len(idx)
        pairs += d.size - len(idx)
    return {"hamming_min": float(min(mins)), "hamming_mean": float(total / max(pairs, 1))}
