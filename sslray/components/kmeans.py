"""Spherical k-means with faiss whose result is a function of the *set* of features.

faiss seeds its initial centroids (and its subsample of large inputs) by position, so the same
features in another row order would give other clusters. We cluster the rows in a canonical
order (sorted by their projection on a seeded random direction) and map the labels back:
same features -> same labels, and permuting the rows permutes the labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class KMeansResult:
    labels: torch.Tensor  # (N,) int64 cluster of each row
    centroids: torch.Tensor  # (K, D) float32 unit vectors
    mean_cosine: float  # mean cosine of each row to its centroid (the spherical k-means objective)
    sizes: torch.Tensor  # (K,) rows per cluster

    def stats(self) -> dict[str, float]:
        sizes = self.sizes.float()
        return {"kmeans_mean_cosine": round(self.mean_cosine, 5), "cluster_size_min": int(sizes.min()),
                "cluster_size_max": int(sizes.max()), "cluster_size_mean": round(float(sizes.mean()), 2),
                "clusters_empty": int((sizes == 0).sum())}


def spherical_kmeans(features: torch.Tensor, k: int, seed: int = 0, iterations: int = 20) -> KMeansResult:
    """Cluster the L2-normalised rows of ``features`` ``(N, D)`` into ``k`` clusters (faiss,
    cosine assignment, centroids renormalised after every iteration)."""
    from .faiss import faiss

    x = torch.nn.functional.normalize(features.float(), dim=1).numpy().astype(np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} points")
    direction = np.random.default_rng(seed).standard_normal(d)
    order = np.argsort(x.astype(np.float64) @ direction, kind="stable")
    xs = np.ascontiguousarray(x[order])
    km = faiss.Kmeans(d, k, niter=iterations, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(256, -(-n // k)))
    km.train(xs)
    _, assigned = km.index.search(xs, 1)
    labels = np.empty(n, np.int64)
    labels[order] = assigned[:, 0]
    labels_t, centroids = torch.from_numpy(labels), torch.from_numpy(np.ascontiguousarray(km.centroids))
    mean_cos = float((torch.from_numpy(x) * centroids[labels_t]).sum(1).mean())
    return KMeansResult(labels_t, centroids, mean_cos, torch.bincount(labels_t, minlength=k))
