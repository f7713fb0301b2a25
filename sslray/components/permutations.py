"""Jigsaw permutation subsets chosen by maximal Hamming distance (Noroozi & Favaro 2016, Alg. 1).

The greedy rule: start from a random permutation of the 9! candidates, then repeatedly add the
candidate whose *minimum* Hamming distance to the already chosen set is largest (ties broken by
the larger mean distance, then by a seeded random order). A larger minimum distance makes the
permutations easier to tell apart; the paper shows that the subset's size and its minimum
distance both move transfer performance.
"""

from __future__ import annotations

import itertools
import os
import math
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _all_permutations(n_tiles: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n_tiles))), dtype=np.uint8)


#: above this many tiles (9! = 362,880 candidates) the candidates are a seeded random pool
MAX_ENUMERATED = 9


def _candidates(n_tiles: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """All permutations in a seeded random order, or (beyond 9 tiles, e.g. a 4x4 grid) a seeded
    pool of distinct random permutations large enough for the greedy choice to matter."""
    if n_tiles <= MAX_ENUMERATED:
        cands = _all_permutations(n_tiles)
        return cands[rng.permutation(len(cands))]  # seeded random tie-breaking
    pool = max(100_000, 20 * size)
    perms = np.argsort(rng.random((pool, n_tiles)), axis=1).astype(np.uint8)
    _, first = np.unique(perms, axis=0, return_index=True)
    return perms[np.sort(first)]


def hamming_permutations(size: int, n_tiles: int = 9, seed: int = 0, cache: bool = True) -> np.ndarray:
    """``(size, n_tiles)`` permutations of ``range(n_tiles)`` chosen greedily by maximal Hamming
    distance; seeded and cached on disk (``$SSLRAY_CACHE``).

    Each step costs one pass over the candidates (rows of a ``(n_tiles, M)`` table compared with
    the new permutation), so 10,000 permutations out of 9! take seconds, once.
    """
    total = math.factorial(n_tiles)
    if not 2 <= size <= total:
        raise ValueError(f"permutation subset size must be in [2, {n_tiles}!={total}], got {size}")
    path = None
    if cache:
        from ..data import cache_dir

        path = cache_dir() / f"perms-hamming-{n_tiles}-{size}-seed{seed}.npy"
        if path.exists():
            return np.load(path)
    rng = np.random.default_rng(seed)
    cands = _candidates(n_tiles, size, rng)
    if len(cands) < size:
        raise ValueError(f"only {len(cands)} distinct candidate permutations for a subset of {size}")
    table = np.ascontiguousarray(cands.T)  # (n_tiles, M): a row per tile position

    def dist(j: int) -> np.ndarray:
        return (table != table[:, j : j + 1]).sum(0, dtype=np.int32)

    chosen = np.empty(size, np.int64)
    chosen[0] = 0
    min_d = dist(0)
    sum_d = min_d.copy()
    shift = int(n_tiles * size).bit_length()  # score = min distance first, then the summed distance
    for i in range(1, size):
        score = (min_d << shift) + sum_d
        score[chosen[:i]] = -1
        j = int(score.argmax())
        chosen[i] = j
        d = dist(j)
        np.minimum(min_d, d, out=min_d)
        sum_d += d
    perms = cands[chosen]
    if path is not None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # concurrent runs: a file each
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
