"""Contrastive predictive coding on images (van den Oord et al. 2018, "Representation learning with
contrastive predictive coding", sec. 3.3; Hénaff et al. 2019, "Data-efficient image recognition
with contrastive predictive coding").

The image is cut into a ``grid x grid`` lattice of overlapping patches (the papers: 64-px patches
with 32-px overlap, a 7x7 grid on 256 px; here by default the same 7x7 grid at half-patch stride,
8-px patches on 32-px images). Every patch goes through the trunk alone (its pooled res5 vector
``z``); a context network that sees only the rows at and above a row (masked convolutions,
PixelCNN-style, as Hénaff et al.) gives ``c[i, j]``, and for each step ``k = 1 .. steps`` a linear
map ``W_k`` predicts ``z[i + k, j]`` from it, for ``k = min_step .. steps`` (the next row, half
of which the context already holds at half-patch stride, is skipped as in the papers' code). The
loss is InfoNCE (eq. 4): the predicted patch
against negatives, the other patches of the batch (``negatives``: every other patch, other
positions of the same image only, or other images' patches only), scored by the cosine over a
temperature by default (``similarity``: the papers' plain dot product diverged here). Under several workers the
other images include every worker's (gathered with gradients), so the negatives mean the same
with 1 or 64 workers.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..components.distributed import gather_with_grad, rank
from ..components.shuffle import shuffled
from ..config import MAX_CHANNELS, MAX_IMAGE_SIZE, MAX_TEMPERATURE
from ..errors import UserError
from . import register
from ._contrastive import CROP, MAX_STRENGTH, photometric
from .base import Method, Strict

#: the smallest patch (px): below it even the first 3x3 convolutions see mostly padding
MIN_PATCH = 4
MAX_GRID = 32  # patches per side: the trunk sees the batch times grid^2 patches


class CPCSettings(Strict):
    grid: int = Field(7, ge=2, le=MAX_GRID, description="patches per side (the papers' 7x7)")
    patch: int | None = Field(None, ge=MIN_PATCH, le=MAX_IMAGE_SIZE,
                              description="patch side (px); default the largest that fits the grid at half-patch "
                                          "stride: 8 px on 32-px images (the papers: 64 px on 256 px)")
    steps: int = Field(5, ge=1, le=MAX_GRID - 1, description="the farthest row predicted: k = min_step .. steps rows "
                                                             "below (van den Oord et al. predict up to 5 rows on the "
                                                             "7x7 grid)")
    min_step: int = Field(2, ge=1, le=MAX_GRID - 1, description="the nearest row predicted: at half-patch stride the "
                                                                "next row shares half its pixels with the context, so "
                                                                "predicting it is copying (the papers' code skips it)")
    negatives: Literal["all", "same_image", "other_images"] = Field(
        "all", description="where negatives come from: every other patch of the (global) batch as in the papers, "
                           "only other positions of the same image, or only other images' patches")
    similarity: Literal["cosine", "dot"] = Field(
        "cosine", description="score of a prediction and a patch: dot = the papers' dot product, which diverged here "
                              "within 3 SGD steps at lr 0.05 (unbounded scores on a batch-norm trunk; Hénaff et al. "
                              "use layer norm); cosine = of the L2-normalised vectors, divided by the temperature")
    temperature: float = Field(0.1, gt=0, le=MAX_TEMPERATURE, description="divides the scores (cosine: 0.1, as "
                                                                          "SimCLR-style InfoNCE; dot: use 1 for the "
                                                                          "papers' plain dot product)")
    context_dim: int = Field(0, ge=0, le=MAX_CHANNELS, description="context network width (0 = the trunk's output "
                                                                   "size)")
    context_layers: int = Field(2, ge=1, le=64, description="masked residual blocks of the context network (Hénaff et "
                                                            "al.: a PixelCNN; 2 blocks at CPU scale see 4 rows up)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the image augmentation")


def patch_geometry(settings: CPCSettings, image_size: int) -> tuple[int, int]:
    """``(patch, stride)``: patch side and step between patches (half the patch, 50 % overlap)."""
    g = settings.grid
    patch = settings.patch or 2 * image_size // (g + 1)
    return patch, max(1, patch // 2)


def patch_grid(x: torch.Tensor, grid: int, patch: int, stride: int) -> torch.Tensor:
    """``(N, C, S, S)`` -> ``(N, grid * grid, C, patch, patch)``, row-major, the lattice centred."""
    span = (grid - 1) * stride + patch
    o = (x.shape[-1] - span) // 2
    x = x[..., o:o + span, o:o + span]
    p = x.unfold(2, patch, stride).unfold(3, patch, stride)  # (N, C, G, G, P, P)
    return p.permute(0, 2, 3, 1, 4, 5).reshape(len(x), grid * grid, x.shape[1], patch, patch)


def positive_index(n: int, grid: int, k: int, offset: int = 0, device=None) -> torch.Tensor:
    """For the predictions of step ``k`` in (image, row i < grid - k, column j) order, the index of
    their positive, patch ``(i + k, j)`` of the same image, among ``offset`` + the ``n * grid^2``
    patches in (image, row, column) order."""
    img = torch.arange(n, device=device)[:, None, None]
    i = torch.arange(grid - k, device=device)[None, :, None]
    j = torch.arange(grid, device=device)[None, None, :]
    return (offset + img * grid * grid + (i + k) * grid + j).flatten()


class MaskedBlock(nn.Module):
    """A residual block whose output at row i sees rows <= i only: a (2 x 3) convolution on the map
    padded by one row on top (the row above and its own), ReLU, then a 1x1 convolution."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, (2, 3))
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.out(F.relu(self.conv(F.pad(F.relu(x), (1, 1, 1, 0)))))


@register
class CPC(Method):
    """Predict the features of patches k rows below from the context above, InfoNCE (CPC; van den Oord 2018)."""

    name = "cpc"
    Settings = CPCSettings
    contrastive = True

    @classmethod
    def check_config(cls, settings, info):
        image_size, batch_size = info.image_size, info.batch_size
        patch, stride = patch_geometry(settings, image_size)
        span = (settings.grid - 1) * stride + patch
        if patch < MIN_PATCH or span > image_size:
            raise UserError(f"cpc: a {settings.grid}x{settings.grid} grid of {patch}-px patches at {stride}-px stride "
                            f"spans {span} px and does not fit {image_size}-px images (patches of at least "
                            f"{MIN_PATCH} px): use a smaller grid or patch, or larger images (data.image_size)")
        if settings.steps >= settings.grid:
            raise UserError(f"cpc: steps={settings.steps} leaves no row to predict on a {settings.grid}-row grid "
                            f"(at most {settings.grid - 1})")
        if settings.min_step > settings.steps:
            raise UserError(f"cpc: min_step={settings.min_step} is past steps={settings.steps}: no step to predict")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        s = settings
        self.patch, self.stride = patch_geometry(s, info.image_size)
        self.ks = list(range(s.min_step, s.steps + 1))
        dim = s.context_dim or trunk.out_dim
        self.context = nn.Sequential(nn.Conv2d(trunk.out_dim, dim, 1),
                                     *[MaskedBlock(dim) for _ in range(s.context_layers)])
        self.predict = nn.ModuleList(nn.Conv2d(dim, trunk.out_dim, 1) for _ in self.ks)  # W_k

    def describe(self):
        return {"patch_px": self.patch, "stride_px": self.stride}

    @classmethod
    def views(cls, settings, image_size):
        return (CROP,)

    def score_vector(self, v: torch.Tensor) -> torch.Tensor:
        """What scores are dot products of: ``v`` itself (dot) or its unit vector (cosine), in float32."""
        return F.normalize(v.float(), dim=1) if self.settings.similarity == "cosine" else v.float()

    def candidates(self, z: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The patches every prediction is scored against, ``(M, D)`` in (image, row, column) order,
        and the offset of this worker's first patch among them: the global batch's patches (unless
        negatives come from the same image only)."""
        if self.settings.negatives == "same_image":
            return z, 0
        return gather_with_grad(z), rank() * len(z)

    def forward(self, views, y, idx):
        s, g = self.settings, self.settings.grid
        x = photometric(views[0], s.strength)
        n = len(x)
        patches = patch_grid(x, g, self.patch, self.stride).flatten(0, 1)
        z = shuffled(self.trunk, patches.contiguous(memory_format=torch.channels_last))  # (N * G * G, D)
        ctx = self.context(z.view(n, g, g, -1).permute(0, 3, 1, 2))  # (N, dim, G, G): row i sees rows <= i
        keys, offset = self.candidates(z)
        keys = self.score_vector(keys)
        losses, hits, count = [], 0.0, 0
        for w_k, k in zip(self.predict, self.ks):
            pred = self.score_vector(w_k(ctx[:, :, : g - k]).permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
            target = positive_index(n, g, k, offset, z.device)
            logits = pred @ keys.T / s.temperature  # (N (G - k) G, M)
            logits = logits.masked_fill(~self.allowed(n, g, k, len(keys), offset, target), float("-inf"))
            losses.append(F.cross_entropy(logits, target, reduction="sum"))
            hits = hits + (logits.detach().argmax(1) == target).float().sum()
            count += len(target)
        return {"loss": torch.stack(losses).sum() / count, "acc": hits / count}

    def allowed(self, n: int, g: int, k: int, m: int, offset: int, target: torch.Tensor) -> torch.Tensor:
        """``(predictions, M)`` bool: which candidates each prediction of step k is scored against:
        its positive and the negatives ``negatives`` names."""
        if self.settings.negatives == "all":
            return torch.ones(len(target), m, dtype=torch.bool, device=target.device)
        image_of = torch.arange(m, device=target.device) // (g * g)  # candidate -> image (global)
        own = ((target - offset) // (g * g) + offset // (g * g))[:, None]  # prediction -> its image
        same = image_of[None, :] == own
        keep = same if self.settings.negatives == "same_image" else ~same
        return keep.scatter(1, target[:, None], True)
