"""CIE Lab colour space and its quantised ab plane, for colorization (Zhang et al. 2016).

``rgb_to_lab`` / ``lab_to_rgb`` are the exact sRGB (IEC 61966-2-1) formulas with the D65 white
point, batched over ``(N, 3, H, W)`` tensors on any device; they compute in float32 with autocast
off, because a bfloat16 matrix product would cost about a unit of L. ``L`` is in [0, 100] and
``a``, ``b`` roughly in [-110, 110].

Zhang et al. 2016 (sec. 2.1) quantise the ab plane into bins of side 10 and keep the Q = 313 bins
in gamut; a pixel's target is a *soft encoding*: its 5 nearest bin centres weighted by a Gaussian
of sigma 5. :func:`ab_bins` finds the in-gamut bins of sRGB itself (every bin some sRGB colour
falls in, 261 of them), not ImageNet's 313, so the set depends on nothing but the formulas.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

# sRGB primaries -> CIE XYZ (D65); the rows sum to the white point, so white maps to a = b = 0
RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
              (0.2126729, 0.7151522, 0.0721750),
              (0.0193339, 0.1191920, 0.9503041))
WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPS = (6 / 29) ** 3  # the CIE cube-root / linear junction


def _matrix(m, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.tensor(m, dtype=x.dtype, device=x.device), x)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] ``(N, 3, H, W)`` -> CIE Lab (D65), float32."""
    with torch.autocast(rgb.device.type, enabled=False):
        c = rgb.float().clamp(0, 1)
        lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        xyz = _matrix(RGB_TO_XYZ, lin) / torch.tensor(WHITE_D65, device=c.device).view(1, 3, 1, 1)
        f = torch.where(xyz > _EPS, xyz.clamp_min(_EPS) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
        fx, fy, fz = f.unbind(1)
        return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def lab_to_rgb(lab: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """CIE Lab (D65) ``(N, 3, H, W)`` -> sRGB in [0, 1] (clamped to the gamut unless ``clamp=False``)."""
    with torch.autocast(lab.device.type, enabled=False):
        L, a, b = lab.float().unbind(1)
        fy = (L + 16) / 116
        f = torch.stack([fy + a / 500, fy, fy - b / 200], 1)
        xyz = torch.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
        xyz = xyz * torch.tensor(WHITE_D65, device=lab.device).view(1, 3, 1, 1)
        lin = _matrix(torch.linalg.inv(torch.tensor(RGB_TO_XYZ, dtype=torch.float64)).tolist(), xyz)
        rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)
        return rgb.clamp(0, 1) if clamp else rgb


def lightness_input(lab: torch.Tensor) -> torch.Tensor:
    """What a colorization trunk sees: ``L / 100`` in [0, 1], replicated to 3 channels."""
    return (lab[:, :1] / 100).clamp(0, 1).expand(-1, 3, -1, -1)


@lru_cache(maxsize=4)
def _gamut_cells(grid: int) -> tuple[tuple[int, int], ...]:
    steps = torch.linspace(0, 1, 65)
    cube = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij")).reshape(1, 3, -1, 1)
    ab = rgb_to_lab(cube)[0, 1:, :, 0]  # (2, 65^3)
    return tuple(map(tuple, torch.unique(torch.round(ab / grid).long().T, dim=0).tolist()))


def ab_bins(grid: int = 10) -> torch.Tensor:
    """``(Q, 2)`` centres of the ab bins of side ``grid`` that sRGB colours reach.

    Q = 261 at ``grid=10`` (a 65^3 sRGB cube already finds them all; 129^3 finds no more)."""
    return torch.tensor(_gamut_cells(grid), dtype=torch.float32) * grid


_WINDOW = 2  # candidates for the nearest bins: the 5x5 grid cells around a pixel's own cell


@lru_cache(maxsize=8)
def _lookup(grid: int, device: str) -> tuple[torch.Tensor, int]:
    """Grid cell ``(i, j)`` -> bin index (-1 outside the gamut), shifted by ``offset`` >= 0."""
    cells = torch.tensor(_gamut_cells(grid))
    offset = int(cells.abs().max()) + _WINDOW + 1
    lut = torch.full((2 * offset + 1, 2 * offset + 1), -1, dtype=torch.long)
    lut[cells[:, 0] + offset, cells[:, 1] + offset] = torch.arange(len(cells))
    return lut.to(device), offset


def soft_encode(ab: torch.Tensor, grid: int = 10, neighbours: int = 5, sigma: float = 5.0):
    """Zhang et al. 2016 soft encoding of ``(N, 2, H, W)`` ab values: the ``neighbours`` nearest
    in-gamut bins and their weights ``exp(-d^2 / 2 sigma^2)`` (summing to 1), nearest first.

    Returns ``(bins, weights)``, each ``(N, k, H, W)``; ``bins[:, 0]`` is the hard (nearest) bin.
    Sparse, because the dense ``(N, Q, H, W)`` target would be Q = 261 times the ab map; only
    the cells within two of a pixel's own are candidates (the bins sit on a grid).
    """
    lut, offset = _lookup(grid, str(ab.device))
    n, _, h, w = ab.shape
    v = ab.float().permute(0, 2, 3, 1).reshape(-1, 1, 2)  # (P, 1, 2)
    r = torch.arange(-_WINDOW, _WINDOW + 1, device=ab.device)
    window = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).view(1, -1, 2)  # (1, 25, 2)
    cells = (torch.round(v / grid).long() + window).clamp(-offset, offset)  # (P, 25, 2)
    ids = lut[cells[..., 0] + offset, cells[..., 1] + offset]
    d2 = ((cells * grid - v) ** 2).sum(-1).masked_fill(ids < 0, float("inf"))
    k = min(neighbours, d2.shape[1])
    dk, pick = d2.topk(k, dim=1, largest=False)
    bins = ids.gather(1, pick).clamp_min(0)
    weights = torch.softmax(-dk / (2 * sigma**2), dim=1).nan_to_num(0.0)
    return (bins.view(n, h, w, k).permute(0, 3, 1, 2), weights.view(n, h, w, k).permute(0, 3, 1, 2))


def soft_cross_entropy(logits: torch.Tensor, bins: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``-sum_k weights_k log softmax(logits)[bins_k]`` (Zhang et al. 2016 eq. 2), ``(N, H, W)``."""
    logp = F.log_softmax(logits.float(), dim=1)
    return -(logp.gather(1, bins) * weights).sum(1)


def smoothed_prior(counts: torch.Tensor, grid: int = 10, sigma: float = 5.0) -> torch.Tensor:
    """Empirical bin distribution smoothed by a Gaussian of ``sigma`` in the ab plane (Zhang et al.)."""
    c = ab_bins(grid).to(counts.device)
    kernel = torch.exp(-torch.cdist(c, c) ** 2 / (2 * sigma**2))
    p = kernel / kernel.sum(0, keepdim=True) @ (counts.float() / counts.sum().clamp_min(1))
    return p / p.sum()


def rebalancing_weights(prior: torch.Tensor, lam: float = 0.5) -> torch.Tensor:
    """Zhang et al. 2016 eq. 4: ``w ∝ ((1 - lam) p + lam / Q)^-1``, normalised so ``E_p[w] = 1``.

    ``prior`` is the (smoothed) empirical bin distribution; rare, saturated colours get weight."""
    p = prior / prior.sum()
    w = 1.0 / ((1 - lam) * p + lam / len(p))
    return w / (p * w).sum()
