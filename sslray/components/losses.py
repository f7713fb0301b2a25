"""Contrastive losses as pure functions of similarities or embeddings, one per paper.

Conventions: ``pos`` is ``(B,)`` — the similarity of each anchor to its positive — and ``neg``
is ``(B, K)`` — its similarities to K negatives; every loss is averaged over the B anchors.
What "similarity" means (cosine, negative squared distance) is the caller's choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .distributed import gather_with_grad, rank, world_size


def npid_nce_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float, log_z: torch.Tensor | float,
                  num_data: int) -> torch.Tensor:
    """Noise-contrastive estimation of Wu et al. 2018 (NPID), eqs. 4-7.

    The non-parametric softmax ``P(i|v) = exp(v_i . v / tau) / Z`` is fitted as a binary
    "data or noise" problem against the uniform noise ``P_n = 1/n``: with ``K`` noise samples,
    ``h(i, v) = P(i|v) / (P(i|v) + K P_n)`` and the loss is
    ``-log h(i, v_i) - sum_j log(1 - h(i', v_j))``. ``Z`` is a constant (the paper estimates it
    once by Monte Carlo, ``Z ~ n * mean exp(s / tau)``); ``log_z`` is its logarithm. In log
    space ``h = sigmoid(s / tau - log Z - log(K / n))``, which keeps it stable.
    """
    k = neg.shape[1]
    shift = log_z + math.log(k / num_data)
    return -(F.logsigmoid(pos / temperature - shift) + F.logsigmoid(shift - neg / temperature).sum(1)).mean()


def pirl_nce_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """PIRL's NCE loss as the lecture writes it (Misra & van der Maaten 2019, eqs. 2-3).

    ``h(a, b) = exp(s(a, b) / tau) / (exp(s(a, b) / tau) + sum_{n in N} exp(s(a, n) / tau))``
    with ``N`` the anchor's negatives, and ``k + 1`` binary problems:
    ``L = -log h(a, positive) - sum_{n in N} log(1 - h(a, n))``. (The paper's own ``h`` puts the
    constant ``|D_N| / |D|`` where the lecture puts the sum over negatives.)
    """
    p, n = pos / temperature, neg / temperature
    noise = torch.logsumexp(n, 1)  # log sum_n exp(s(a, n) / tau)
    log_h_pos = p - torch.logaddexp(p, noise)
    log_1m_h_neg = noise[:, None] - torch.logaddexp(n, noise[:, None])
    return -(log_h_pos + log_1m_h_neg.sum(1)).mean()


def info_nce(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE (van den Oord et al. 2018; MoCo, He et al. 2020, eq. 1): cross-entropy of the
    positive against positive + negatives, ``-log exp(s+/tau) / (exp(s+/tau) + sum_n exp(s_n/tau))``."""
    logits = torch.cat([pos[:, None], neg], 1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020, eq. 1) over two views ``(B, D)`` of the same images.

    For the 2N views of a batch, ``l(i, j) = -log exp(cos(z_i, z_j)/tau) / sum_{k != i} exp(cos(z_i, z_k)/tau)``
    averaged over both orders of every positive pair. Under ``torch.distributed`` the negatives
    are the views of the *global* batch, gathered with gradients, so the loss averaged over the
    ranks equals the one-process loss on the union of the batches.
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    b, w, r = len(z1), world_size(), rank()
    keys = torch.cat([gather_with_grad(z1), gather_with_grad(z2)])  # (2WB, D): all first views, then all second
    logits = torch.cat([z1, z2]) @ keys.T / temperature  # (2B, 2WB)
    own = r * b + torch.arange(b, device=z1.device)
    self_idx = torch.cat([own, own + w * b])
    target = torch.cat([own + w * b, own])
    logits = logits.masked_fill(F.one_hot(self_idx, keys.shape[0]).bool(), float("-inf"))
    return F.cross_entropy(logits, target)


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Distillation loss (Hinton et al. 2015): cross-entropy ``-sum_k p_k log q_k`` of the
    student's softmax ``q`` against the teacher's soft predictions ``p``."""
    return -(target_probs * F.log_softmax(logits, 1)).sum(1).mean()


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse signal: mean per-dimension std of the L2-normalised embeddings of a batch.

    About ``1/sqrt(D)`` for embeddings spread over the sphere, 0 when every image maps to the
    same point (Chen & He 2021, SimSiam, sec. 4.1)."""
    return F.normalize(z.float(), dim=1).std(0).mean()
