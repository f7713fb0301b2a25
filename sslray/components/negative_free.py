"""Losses and schedules of the negative-free methods (BYOL, SimSiam, Barlow Twins, VICReg, DINO),
as pure functions of embeddings, one per paper.

Under ``torch.distributed`` the losses that need batch statistics (Barlow Twins' normalisation and
cross-correlation, VICReg's variance and covariance) gather the embeddings of the *global* batch
with gradients and compute the loss on it on every rank. Each rank's gradient through the gather
is then the sum of every rank's, ``world`` times its share of the global loss's, and the data
parallel average brings it back to exactly the gradient of the one-process loss on the union of
the batches. Losses that are means over images (BYOL's, SimSiam's, VICReg's invariance) stay local:
the data parallel average of the ranks' means is the global mean.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .distributed import gather, gather_with_grad

#: BatchNorm1d's epsilon (Barlow Twins normalises with an affine-free BN layer)
BN_EPS = 1e-5
#: VICReg's epsilon under the square root of the variance (Bardes et al. 2022, eq. 1)
VICREG_EPS = 1e-4
VICREG_GAMMA = 1.0  # the per-dimension std VICReg's variance term asks for (the paper's gamma)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's ``D(p, z) = -cos(p, z)`` averaged over the batch (Chen & He 2021, eq. 1). The
    stop-gradient on ``z`` is the caller's (``z.detach()``), so the ablation without it is possible."""
    return -F.cosine_similarity(p.float(), z.float(), dim=1).mean()


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's ``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)`` averaged over the batch (Grill et al. 2020,
    eq. 2); ``z`` is the target network's projection, detached by the caller."""
    return (2 - 2 * F.cosine_similarity(p.float(), z.float(), dim=1)).mean()


def _batch_norm(z: torch.Tensor) -> torch.Tensor:
    """Affine-free batch normalisation (biased variance, as BatchNorm1d in training)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + BN_EPS)


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    return m.masked_select(~torch.eye(len(m), dtype=torch.bool, device=m.device))


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, eqs. 1-2): ``C = BN(z1)^T BN(z2) / N`` over the N images
    of the global batch, ``L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2``."""
    z1, z2 = gather_with_grad(z1.float()), gather_with_grad(z2.float())
    c = _batch_norm(z1).T @ _batch_norm(z2) / len(z1)
    return (1 - c.diagonal()).pow(2).sum() + lambd * _off_diagonal(c).pow(2).sum()


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, gamma: float = VICREG_GAMMA) -> dict[str, torch.Tensor]:
    """VICReg's three terms (Bardes et al. 2022, eqs. 1-5), unweighted:

    - ``invariance``: mean squared distance ``mean_{b,d} (z1 - z2)^2`` (the local batch's mean);
    - ``variance``: ``mean_d max(0, gamma - sqrt(Var(z_d) + eps))``, averaged over both branches;
    - ``covariance``: ``sum_{i != j} C(z)_ij^2 / d`` with ``C`` the unbiased covariance, summed over
      both branches (as the paper's pseudo-code).

    Variance and covariance are taken over the global batch."""
    z1, z2 = z1.float(), z2.float()
    invariance = F.mse_loss(z1, z2)
    variance, covariance = 0.0, 0.0
    for z in (gather_with_grad(z1), gather_with_grad(z2)):
        n, d = z.shape
        z = z - z.mean(0)
        variance = variance + F.relu(gamma - torch.sqrt(z.var(0) + VICREG_EPS)).mean() / 2
        cov = z.T @ z / (n - 1)
        covariance = covariance + _off_diagonal(cov).pow(2).sum() / d
    return {"invariance": invariance, "variance": variance, "covariance": covariance}


def dino_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], center: torch.Tensor,
              student_temp: float, teacher_temp: float) -> torch.Tensor:
    """DINO's cross-entropy (Caron et al. 2021, eq. 3 and Algorithm 1): for every teacher view ``t``
    (the global crops) and every *other* student view ``s``, ``-sum_k P_t log P_s`` with
    ``P_t = softmax((g_t - c) / tau_t)`` (centred and sharpened, no gradient) and
    ``P_s = softmax(g_s / tau_s)``, averaged over the pairs and the batch. Student view ``i`` for
    ``i < len(teacher)`` is the same crop as teacher view ``i`` and is not paired with it."""
    targets = [F.softmax((t.float() - center) / teacher_temp, dim=1).detach() for t in teacher]
    logs = [F.log_softmax(s.float() / student_temp, dim=1) for s in student]
    total, pairs = 0.0, 0
    for i, p in enumerate(targets):
        for j, log_q in enumerate(logs):
            if i != j:
                total = total - (p * log_q).sum(1).mean()
                pairs += 1
    return total / pairs


@torch.no_grad()
def update_center(center: torch.Tensor, teacher: torch.Tensor, momentum: float) -> None:
    """DINO's centre, ``c <- m c + (1 - m) mean(g_t)`` over the teacher outputs of the *global*
    batch (Caron et al. 2021, eq. 4), in place: identical on every rank."""
    center.mul_(momentum).add_(gather(teacher.float()).mean(0), alpha=1 - momentum)


def cosine_rise(base: float, step: int, total: int) -> float:
    """BYOL's target decay rate (Grill et al. 2020, sec. 3.2):
    ``tau = 1 - (1 - base) (cos(pi k / K) + 1) / 2`` at step ``k`` of ``K``: ``base`` at the start,
    1 at the end (and after it)."""
    k = min(step, total) / max(1, total)
    return 1 - (1 - base) * (math.cos(math.pi * k) + 1) / 2


def linear_warmup(start: float, end: float, step: int, steps: int) -> float:
    """``start`` rising linearly to ``end`` over ``steps`` steps, then ``end`` (DINO's teacher
    temperature warm-up)."""
    if steps <= 0 or step >= steps:
        return end
    return start + (end - start) * step / steps
