"""Probes on frozen features: a linear classifier and a weighted kNN vote (faiss)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F


def standardize(train: torch.Tensor, *others: torch.Tensor, chunk: int = 4096):
    """Per-dimension z-scores of ``train`` and of each of ``others`` with the training set's mean
    and std (float32)."""
    mean = torch.zeros(train.shape[1], dtype=torch.float64)
    sq = torch.zeros_like(mean)
    for s in range(0, len(train), chunk):
        c = train[s : s + chunk].double()
        mean += c.sum(0)
        sq += (c * c).sum(0)
    mean /= len(train)
    std = (sq / len(train) - mean**2).clamp_min(0).sqrt().clamp_min(1e-4)
    mean, std = mean.float(), std.float()
    return tuple((x.float() - mean) / std for x in (train, *others))


def carve(labels: torch.Tensor, fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train_index, val_index)``: a seeded, class-stratified validation split of ``fraction`` of
    every class (at least one image of any class with two or more, never the whole class)."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


class LinearHeads(torch.nn.Module):
    """Linear classifiers trained side by side on the same batches, one per ``(lr, weight_decay)``
    of a grid (DINOv2's linear evaluation trains its grid in one pass the same way): one weight
    tensor ``(heads, classes, dim)``, so one matrix product serves every head, and each head is
    initialised as :class:`torch.nn.Linear` would be, U(+-1/sqrt(dim))."""

    def __init__(self, dim: int, num_classes: int, grid: list[tuple[float, float]]):
        super().__init__()
        self.grid, self.num_classes = list(grid), num_classes
        bound = dim**-0.5
        self.weight = torch.nn.Parameter(torch.empty(len(self.grid), num_classes, dim).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.empty(len(self.grid), num_classes).uniform_(-bound, bound))

    def __len__(self) -> int:
        return len(self.grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, heads, classes)`` logits."""
        return F.linear(x, self.weight.flatten(0, 1), self.bias.flatten()).view(len(x), len(self), self.num_classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The sum over heads of each head's mean cross-entropy (each reaches only its own head)."""
        logits = self(x)  # (B, H, C) -> (B*H, C), contiguous: a strided gradient makes the weight's mm ~5x slower
        return F.cross_entropy(logits.reshape(-1, self.num_classes), y.repeat_interleave(len(self))) * len(self)

    def optimizer(self, steps: int) -> "GridAdamW":
        return GridAdamW(self, steps)

    @torch.no_grad()
    def scores(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Per head: ``(correct count, summed cross-entropy)`` on ``(x, y)``."""
        correct = torch.zeros(len(self), dtype=torch.long)
        loss = torch.zeros(len(self), dtype=torch.float64)
        for s in range(0, len(x), chunk):
            logits, t = self(x[s : s + chunk]), y[s : s + chunk]
            correct += (logits.argmax(2) == t[:, None]).sum(0).cpu()
            loss += F.cross_entropy(logits.reshape(-1, self.num_classes), t.repeat_interleave(len(self)),
                                    reduction="none").view(-1, len(self)).sum(0).double().cpu()
        return correct, loss


class GridAdamW:
    """:class:`torch.optim.AdamW` (same defaults: betas 0.9/0.999, eps 1e-8, decoupled weight decay)
    with a cosine schedule to 0 over ``steps``, where every head of a :class:`LinearHeads` has its
    own lr and weight decay. One parameter group per head in torch's AdamW costs ~10 small kernels
    per head per step; this updates all heads with one set (tested equal to torch's, head by head)."""

    def __init__(self, heads: LinearHeads, steps: int, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = [heads.weight, heads.bias]
        lr = torch.tensor([g[0] for g in heads.grid], device=heads.weight.device)
        wd = torch.tensor([g[1] for g in heads.grid], device=heads.weight.device)
        self.lr = [lr.view(-1, 1, 1), lr.view(-1, 1)]
        self.wd = [wd.view(-1, 1, 1), wd.view(-1, 1)]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.betas, self.eps, self.steps, self.t = betas, eps, max(1, steps), 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        scale = 0.5 * (1 + math.cos(math.pi * self.t / self.steps))  # CosineAnnealingLR's closed form
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v, lr, wd in zip(self.params, self.m, self.v, self.lr, self.wd):
            if p.grad is None:
                continue
            lr_t = lr * scale
            p.mul_(1 - lr_t * wd)
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.sub_(lr_t / c1 * m / (v / c2).sqrt().add_(self.eps))


@contextmanager
def _no_denormals():
    """Flush denormal floats to zero while heads train: a high-lr head's softmax underflows to
    denormals, and a matrix product over them ran ~10x slower here."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def choose(correct: torch.Tensor, loss: torch.Tensor) -> int:
    """The head best on validation: most correct, ties broken by the lower cross-entropy, then by
    grid order."""
    best = correct.max()
    tied = torch.nonzero(correct == best).flatten()
    return int(tied[loss[tied].argmin()])


def train_heads(xtr: torch.Tensor, ytr: torch.Tensor, num_classes: int, grid: list[tuple[float, float]],
                epochs: int, batch_size: int, seed: int) -> LinearHeads:
    """AdamW with a cosine schedule on mini-batches of standardised features, no augmentation."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    heads = LinearHeads(xtr.shape[1], num_classes, grid)
    opt = heads.optimizer(epochs * max(1, (len(xtr) + batch_size - 1) // batch_size))
    with _no_denormals():
        for _ in range(epochs):
            perm = torch.randperm(len(xtr), generator=g)
            for s in range(0, len(xtr), batch_size):
                i = perm[s : s + batch_size]
                loss = heads.loss(xtr[i], ytr[i])
                opt.zero_grad()
                loss.backward()
                opt.step()
    return heads


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 num_classes: int, epochs: int = 30, lr: float = 0.01, weight_decay: float = 5e-4,
                 batch_size: int = 256, seed: int = 0) -> float:
    """Top-1 (fraction) of one linear classifier, at a fixed ``(lr, weight_decay)``, trained on
    standardised frozen features: the protocol is fully given by the arguments."""
    xtr, xte = standardize(train_x, test_x)
    heads = train_heads(xtr, train_y, num_classes, [(lr, weight_decay)], epochs, batch_size, seed)
    return float(heads.scores(xte, test_y)[0][0]) / max(len(test_y), 1)


def fixed_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                num_classes: int, cfg, seed: int = 0) -> float:
    """:func:`linear_probe` at the linear protocol's fixed setting (``eval.linear``: epochs, lr,
    weight decay) of an evaluation config ``cfg``."""
    from .protocols import settings_of

    s = settings_of(cfg, "linear")
    return linear_probe(train_x, train_y, test_x, test_y, num_classes, epochs=s.epochs, lr=s.lr,
                        weight_decay=s.weight_decay, seed=seed)


def grid_of(s) -> list[tuple[float, float]]:
    """The probe grid of the linear protocol's settings ``s``: every ``(lr, weight_decay)`` of
    ``s.lrs`` x ``s.weight_decays``, and the fixed ``(s.lr, s.weight_decay)`` (first) so that what
    tuning changed can be told."""
    fixed = (s.lr, s.weight_decay)
    return [fixed] + [(lr, wd) for lr in s.lrs for wd in s.weight_decays if (lr, wd) != fixed]


def tuned_metrics(layer: str, grid: list[tuple[float, float]], val: tuple, test: tuple, n_val: int,
                  n_test: int) -> tuple[dict[str, tuple[float, int]], dict]:
    """A layer's tuned probe from its heads' ``(correct, loss)`` on validation and test:
    ``{metric: (value, images)}`` — ``top1`` (test top-1 of the head best on validation),
    ``untuned_top1`` (test top-1 of the fixed-setting head, grid entry 0), the chosen ``lr``,
    ``weight_decay``, its ``val_top1`` and ``lr_at_edge`` — and the layer's row of the grid record."""
    best = choose(*val)
    lr, wd = grid[best]
    lrs = sorted({g[0] for g in grid})
    metrics = {"top1": (float(test[0][best]) / max(n_test, 1), n_test),
               "untuned_top1": (float(test[0][0]) / max(n_test, 1), n_test),
               "lr": (lr, n_val), "weight_decay": (wd, n_val),
               "val_top1": (float(val[0][best]) / max(n_val, 1), n_val),
               # 1: the chosen lr is the grid's smallest or largest, so the best may lie beyond it
               "lr_at_edge": (float(len(lrs) > 1 and lr in (lrs[0], lrs[-1])), n_val)}
    record = {"chosen": {"lr": lr, "weight_decay": wd},
              "heads": [{"lr": g[0], "weight_decay": g[1], "val_top1": float(val[0][i]) / max(n_val, 1),
                         "val_loss": float(val[1][i]) / max(n_val, 1),
                         "test_top1": float(test[0][i]) / max(n_test, 1)} for i, g in enumerate(grid)]}
    return metrics, record


def tuned_linear_probe(layer: str, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                       test_y: torch.Tensor, num_classes: int, s, seed: int = 0) -> tuple[dict[str, tuple], dict]:
    """A layer's probe with its ``(lr, weight_decay)`` chosen on a validation split carved from the
    training features (``s.val_fraction`` of each class, ``s`` the linear protocol's settings); the
    grid's heads train in one pass on the rest, and the test top-1 of the head best on validation is
    reported (:func:`tuned_metrics`)."""
    tr, va = carve(train_y, s.val_fraction, seed)
    xtr, xva, xte = standardize(train_x[tr], train_x[va], test_x)
    grid = grid_of(s)
    heads = train_heads(xtr, train_y[tr], num_classes, grid, s.epochs, s.batch_size, seed)
    return tuned_metrics(layer, grid, heads.scores(xva, train_y[va]), heads.scores(xte, test_y), len(va), len(test_y))


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
