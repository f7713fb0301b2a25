"""Probes on frozen features: a linear classifier and a weighted kNN vote (faiss)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def standardize(train: torch.Tensor, test: torch.Tensor, chunk: int = 4096):
    """Per-dimension z-scores with the training set's mean and std (float32)."""
    mean = torch.zeros(train.shape[1], dtype=torch.float64)
    sq = torch.zeros_like(mean)
    for s in range(0, len(train), chunk):
        c = train[s : s + chunk].double()
        mean += c.sum(0)
        sq += (c * c).sum(0)
    mean /= len(train)
    std = (sq / len(train) - mean**2).clamp_min(0).sqrt().clamp_min(1e-4)
    mean, std = mean.float(), std.float()
    return (train.float() - mean) / std, (test.float() - mean) / std


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, epochs: int = 30, lr: float = 0.01, weight_decay: float = 5e-4,
                 batch_size: int = 256, seed: int = 0) -> float:
    """Top-1 (fraction) of a linear classifier trained on standardised frozen features.

    AdamW with a cosine schedule on mini-batches, cross-entropy, no augmentation: the protocol
    is fully given by the arguments, all of which are logged beside the result.
    """
    g = torch.Generator().manual_seed(seed)
    xtr, xte = standardize(train_x, test_x)
    torch.manual_seed(seed)
    clf = torch.nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * max(1, (len(xtr) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(xtr), batch_size):
            i = perm[s : s + batch_size]
            loss = F.cross_entropy(clf(xtr[i]), train_y[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        pred = torch.cat([clf(xte[s : s + 4096]).argmax(1) for s in range(0, len(xte), 4096)])
    return float((pred == test_y).float().mean())


def knn_top1(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
             num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Weighted kNN on cosine similarity (Wu et al. 2018, eq. 9): each of the k nearest training
    features votes for its class with weight exp(s / temperature)."""
    from ..components.faiss import faiss

    xtr = np.ascontiguousarray(train_x.float().numpy())
    xte = np.ascontiguousarray(test_x.float().numpy())
    faiss.normalize_L2(xtr)
    faiss.normalize_L2(xte)
    index = faiss.IndexFlatIP(xtr.shape[1])
    if faiss.get_num_gpus() > 0:  # pragma: no cover - GPU hosts only
        index = faiss.index_cpu_to_all_gpus(index)
    index.add(xtr)
    k = min(k, len(xtr))
    sims, nn = index.search(xte, k)
    weights = torch.from_numpy(sims).div(temperature).exp()
    votes = torch.zeros(len(xte), num_classes, dtype=weights.dtype)
    votes.scatter_add_(1, train_y[torch.from_numpy(nn)], weights)
    return float((votes.argmax(1) == test_y).float().mean())
