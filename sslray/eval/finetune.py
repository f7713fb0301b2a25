"""Beyond frozen features: fine-tuning a copy of the whole trunk (:func:`finetune`), and the
class-balanced label subsets of low-shot evaluation (:func:`label_subset`). The protocols that use
them are :mod:`sslray.eval.protocols.finetune` and :mod:`sslray.eval.protocols.lowshot`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from ..components.augment import hflip, pad_crop
from ..components.inputs import batch_inputs
from ..data.views import CENTRE
from ..progress import bar


def subset_name(fraction: float | None = None, shots: int | None = None) -> str:
    """``1pct`` for 0.01, ``0.5pct`` for 0.005, ``10pct`` for 0.1; ``5shot`` for 5 per class."""
    if shots is not None:
        return f"{shots}shot"
    pct = round(100 * fraction, 6)
    return f"{pct:g}pct"


def label_subset(labels: torch.Tensor, fraction: float | None = None, shots: int | None = None,
                 seed: int = 0) -> torch.Tensor:
    """Sorted indices of a class-balanced label subset: ``round(fraction x n_c)`` images of every
    class (at least one), or ``shots`` of every class (all of a class with fewer), drawn by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = shots if shots is not None else max(1, round(fraction * len(idx)))
        picked.append(idx[: min(k, len(idx))])
    return torch.cat(picked).sort().values


def _augment(x: torch.Tensor) -> torch.Tensor:
    return hflip(pad_crop(x, max(1, x.shape[-1] // 8)))


def finetune(trunk, train, test, s, seed: int = 0, device=None, desc: str = "fine-tune") -> float:
    """Top-1 on ``test`` of a copy of ``trunk`` fine-tuned with a new linear head on ``train``
    (data sources: memory or stream), with the fine-tuning protocol's settings ``s``."""
    device = device or next(trunk.parameters()).device
    view = CENTRE.at(train.image_size)
    torch.manual_seed(seed)
    model = copy.deepcopy(trunk).to(device).train()
    head = torch.nn.Linear(model.out_dim, train.num_classes).to(device)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=s.lr, momentum=0.9, nesterov=True,
                          weight_decay=s.weight_decay)
    batch_size = min(s.batch_size, len(train))
    total = max(1, s.epochs * train.steps(batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    for epoch in bar(range(s.epochs), desc=desc, unit="epoch"):
        for batch in train.epoch(epoch, batch_size, seed + 7, views=[view]):
            x, = batch_inputs(batch, [view], device)
            if s.augment:
                x = _augment(x)
            loss = F.cross_entropy(head(model(x.contiguous(memory_format=torch.channels_last))),
                                   batch.labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    correct = seen = 0
    with torch.no_grad():
        for batch in test.scan(256, [view]):
            x, = batch_inputs(batch, [view], device)
            correct += int((head(model(x)).argmax(1).cpu() == batch.labels).sum())
            seen += len(batch.labels)
    return correct / max(seen, 1)
