"""Langevin dynamics on an energy over images: the sampler of contrastive divergence (Hinton 2002)
and its persistent chains (Tieleman 2008), as Du & Mordatch 2019 ("Implicit generation and
generalization in energy-based models", sec. 2.1) run it:
``x <- clip(x - step_size clip(grad_x E(x)) + N(0, noise^2), 0, 1)``.

:func:`langevin` takes any energy (images -> one energy per image); :func:`frozen_statistics` keeps
batch-norm running statistics still while a model is sampled from, so that sampling never moves
what evaluation normalises with.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def frozen_statistics(module: nn.Module):
    """Batch-norm layers normalise with the batch but leave their running statistics alone."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(layers, saved):
            m.momentum = mom


def langevin(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, steps: int, step_size: float,
             noise: float, clip: float = float("inf")) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` Langevin steps from ``x`` on ``energy`` (images -> per-image energies), in [0, 1];
    returns the chains and the energies at their start (no gradient to the model)."""
    x, start = x.detach(), None
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            e = energy(x).float()
            grad, = torch.autograd.grad(e.sum(), x)
        start = e.detach() if start is None else start
        x = (x - step_size * grad.clamp(-clip, clip) + noise * torch.randn_like(x)).clamp(0, 1).detach()
    return x, start
