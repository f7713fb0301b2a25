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
    ``-log h(i, v_i) - sum_j log(1 - h(i', v_j))``. ``Z`` is a constant of the loss, no gradient
    flows into it (the paper estimates it once by Monte Carlo, ``Z ~ n * mean exp(s / tau)``;
    NPID here keeps that estimate current, see ``NPIDSettings.z_momentum``); ``log_z`` is its
    logarithm. In log space ``h = sigmoid(s / tau - log Z - log(K / n))``, which keeps it stable.
    """
    k = neg.shape[1]
    shift = log_z + math.log(k / num_data)
    # -log sigmoid(shift - n / tau) = softplus(n / tau - shift), summed over the K negatives. Plain
    # autograd: a hand-written gradient of this sum (kept until 2026-11-30) was correct but, with
    # torch 2.14 on this CPU, 1.8x slower than F.softplus at B = 128, K = 32k (47 against 26 ms,
    # forward and backward of the loss)
    return (F.softplus(neg / temperature - shift).sum(1) - F.logsigmoid(pos / temperature - shift)).mean()


def pirl_nce_loss(pos: torch.Tensor, neg: torch.Tensor, temperature: float) -> torch.Tensor:
    """PIRL's NCE loss as the lecture writes it (Misra & van der Maaten 2019, eqs. 2-3).

    ``h(a, b) = exp(s(a, b) / tau) / (exp(s(a, b) / tau) + sum_{n in N} exp(s(a, n) / tau))``
    with ``N`` the anchor's negatives, and ``k + 1`` binary problems:
    ``L = -log h(a, positive) - sum_{n in N} log(1 - h(a, n))``. (The paper's own ``h`` puts the
    constant ``|D_N| / |D|`` where the lecture puts the sum over negatives.)

    With ``S = log sum_n exp(s_n / tau)`` and ``w_n = exp(s_n / tau - S)`` (a softmax over the
    negatives), ``log(1 - h(a, n)) = -log(1 + w_n)``. The gradient is written out by hand
    (:class:`_PirlNCE`) so that the ``(B, K)`` negatives are read a few times instead of through
    a dozen autograd passes: at K = 32k this loss was most of a CPU step.
    """
    return _PirlNCE.apply(pos, neg, temperature)


class _PirlNCE(torch.autograd.Function):
    """``L = mean_b [log(e^p + e^S) - p + sum_n log(1 + w_n)]`` with ``p = pos / tau``.

    ``dL/dp = -(1 - h_pos)``; ``dL/dS = (1 - h_pos) - sum_n w_n / (1 + w_n)`` and ``dS/ds_n =
    w_n``, so ``dL/ds_n = w_n / (1 + w_n) + w_n dL/dS`` (then divided by tau and by B).
    """

    @staticmethod
    def forward(ctx, pos, neg, temperature):
        p = pos / temperature
        top = neg.amax(1, keepdim=True)
        w = neg.sub(top).div_(temperature).exp_()  # exp((s_n - max) / tau)
        total = w.sum(1, keepdim=True)
        w.div_(total)  # w_n = exp(s_n / tau - S)
        big_s = (top / temperature + total.log()).squeeze(1)
        log_h_pos = p - torch.logaddexp(p, big_s)
        # log(1 + w) rather than log1p(w): 10x faster on CPU (log is vectorised, log1p is not here);
        # the rounding of 1 + w only touches the logged value, not the gradient below
        loss = (torch.log(w + 1).sum(1) - log_h_pos).mean()
        ctx.save_for_backward(w, log_h_pos)
        ctx.temperature = temperature
        return loss

    @staticmethod
    def backward(ctx, grad):
        w, log_h_pos = ctx.saved_tensors
        scale = grad / (len(w) * ctx.temperature)
        miss = 1 - log_h_pos.exp()  # 1 - h_pos
        sig = w / (1 + w)
        d_s = miss - sig.sum(1)
        d_neg = sig.addcmul_(w, d_s[:, None]).mul_(scale)
        return -miss * scale, d_neg, None


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
