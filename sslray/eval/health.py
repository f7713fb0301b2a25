"""Representation health, per epoch: is the representation collapsing?

On the pooled res5 features of a fixed training subset and of a fixed augmented copy of it:

- ``health/std``: the per-dimension std of the L2-normalised features, times sqrt(D): 1 for
  features spread evenly over the sphere, 0 when every image maps to the same point (SimSiam's
  collapse signal, Chen & He 2021, sec. 4.1, scaled so that widths compare);
- ``health/rank``: RankMe, the effective rank exp(entropy) of the normalised singular values of
  the feature matrix (Garrido et al. 2023): 1 for a collapse to one direction, up to min(N, D);
- ``health/alignment``: E ||f(x) - f(x')||^2 of normalised features of two views of one image
  (Wang & Isola 2020; 0 = invariant to the augmentation, up to 4);
- ``health/uniformity``: log E exp(-2 ||f(x) - f(y)||^2) over pairs of images (Wang & Isola 2020;
  0 when all coincide, more negative = more uniform).

A run *collapses* when ``health/rank`` falls below ``eval.collapse_rank``; for a method with an
embedding, when ``train/embed_std`` x sqrt(D) falls below ``eval.collapse_std``; and for a method
whose loss asks its embedding for a spread (VICReg's variance term: a std of gamma per dimension),
when ``train/embed_scale``, the raw embedding's mean per-dimension std as a share of that spread,
falls below ``eval.collapse_scale``. The last sees a cloud that shrinks toward one point (VICReg
without its variance term): its normalised directions stay spread, so ``embed_std`` cannot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..tracking.tags import COLLAPSE_RANK_REASON, COLLAPSE_SCALE_REASON


class Collapsed(FloatingPointError):
    """A run whose representation collapsed, ended because ``eval.stop_on_collapse`` asks it to:
    like a diverged run, it ends in one line (exit 1) and its MLflow run is marked FAILED."""

    def __init__(self, message: str, epoch: int | None = None, why: str = ""):
        super().__init__(message)
        self.epoch, self.why = epoch, why  # kept through pickling (an exception's __dict__ travels)


@torch.no_grad()
def effective_rank(f: torch.Tensor) -> float:
    s = torch.linalg.svdvals(f.double())
    p = s / s.sum().clamp_min(1e-12) + 1e-12
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def representation_health(f: torch.Tensor, f_aug: torch.Tensor) -> dict[str, float]:
    """``f``, ``f_aug``: (N, D) features of N images and of an augmented view of each."""
    f, f_aug = f.float(), f_aug.float()
    z, z_aug = F.normalize(f, dim=1), F.normalize(f_aug, dim=1)
    d = f.shape[1]
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(len(z), dtype=torch.bool)
    return {"health/std": float(z.std(0).mean()) * math.sqrt(d),
            "health/rank": effective_rank(f),
            "health/alignment": float((z - z_aug).pow(2).sum(1).mean()),
            "health/uniformity": float(torch.logsumexp(-2 * sq[off], 0) - math.log(int(off.sum())))}


def collapse(metrics: dict[str, float], embed_dim: int | None, min_rank: float, min_std: float,
             min_scale: float = 0.0) -> str | None:
    """A one-line reason when the epoch's ``metrics`` show a collapse, else None."""
    rank = metrics.get("health/rank")
    if rank is not None and rank < min_rank:
        return f"{COLLAPSE_RANK_REASON} {rank:.2f} < eval.collapse_rank={min_rank:g}"
    scale = metrics.get("train/embed_scale")
    if scale is not None and scale < min_scale:
        return (f"{COLLAPSE_SCALE_REASON} {scale:.3f} of the spread its loss asks for < eval.collapse_scale="
                f"{min_scale:g} (the embedding shrank toward one point)")
    std = metrics.get("train/embed_std")
    if std is not None and embed_dim and std * math.sqrt(embed_dim) < min_std:
        return (f"std of the normalised {embed_dim}-d embeddings {std:.4f} x sqrt({embed_dim}) = "
                f"{std * math.sqrt(embed_dim):.3f} < eval.collapse_std={min_std:g} (1 = spread over the sphere)")
    return None
