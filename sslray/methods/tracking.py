"""Tracking (Wang & Gupta 2015, "Unsupervised learning of visual representations using videos"):
a patch of a moving object and the patch where it has gone ``gap`` frames later are a positive
pair, patches of other videos are negatives; a siamese trunk learns an embedding in which the
tracked patch is closer to the query (cosine distance ``D = 1 - cos``) than any negative, by a
margin (the ranking loss of the paper's eq. 1, with hard negatives mined in the batch).

Departures from the paper, each a choice of this study:

- **Ground-truth tracks.** The paper finds moving SURF points and follows them with a KLT tracker
  over 30 frames (one second at 30 fps). We cut the patches at the object's recorded centre in
  each frame (the generator's ``track``), so that the study measures the loss, not a tracker's
  errors. ``gap`` defaults to 8 frames: one second of the generated clips at 8 frames/s.
- **Fixed patches, in-batch negatives.** The paper cuts 227-px patches around the tracked region
  and draws negatives from other videos; here a square patch of ``patch`` px (24 of 32) centred
  on the object, clamped inside the frame, resized to the frame size; the negatives of a query
  are the tracked patches of the other clips of the global batch, and the ``hard_negatives``
  closest ones (the paper's K = 4) enter the loss from the first step (the paper picks negatives
  at random for its first epochs, then mines the hardest).
- **Trunk and head.** A ResNet instead of the paper's AlexNet; its pooled res5 goes through an MLP
  to ``embed_dim`` (the paper's fc7 is 1024-d on a full-width network; 128 at our widths).
- ``loss=infonce`` swaps the ranking loss for cross-entropy over the cosine similarities (a
  variant for comparison, not the paper's).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.distributed import gather_with_grad, rank
from ..components.heads import linear_head
from ..components.losses import embedding_std, info_nce
from ..components.shuffle import shuffled
from ..config import MAX_DIM, MAX_FRAMES, MAX_IMAGE_SIZE, MAX_TEMPERATURE, unbounded
from ..errors import UserError
from . import register
from .base import Method, Strict

#: smallest patch (px) we cut: below it the trunk's later stages see little but padding
MIN_PATCH = 8


class TrackingSettings(Strict):
    gap: int = Field(8, ge=1, le=MAX_FRAMES - 1, description="frames between the query and the tracked patch (8 = one "
                                                             "second at 8 frames/s, as the paper's 30 frames at 30 "
                                                             "fps); at most the clip's frames - 1")
    patch: int = Field(24, ge=1, le=MAX_IMAGE_SIZE, description="side (px) of the square patch around the object, cut "
                                                                "from each frame and resized to the frame size (24 of "
                                                                "32 px)")
    embed_dim: int = Field(128, ge=2, le=MAX_DIM, description="embedding dimension (the paper's fc7: 1024, at full "
                                                              "width)")
    head_hidden: int = Field(0, ge=0, le=MAX_DIM, description="hidden size of the MLP on pooled res5 (0 = the trunk's "
                                                              "output size)")
    loss: Literal["ranking", "infonce"] = Field(
        "ranking", description="ranking = the paper's triplet hinge on D = 1 - cos over the hardest negatives; "
                               "infonce = cross-entropy over cos / temperature against every negative")
    margin: float = Field(0.5, gt=0, le=2, description="M of the ranking loss (the paper's 0.5); cosine distances "
                                                       "differ by at most 2")
    hard_negatives: int = Field(4, ge=1, json_schema_extra=unbounded(
        "checked against the batch: at most its optim.batch_size - 1 other clips"),
        description="hardest in-batch negatives per query in the ranking loss (the paper's K = 4)")
    temperature: float = Field(0.1, gt=0, le=MAX_TEMPERATURE, description="tau of the infonce loss")


def patch_boxes(centres: torch.Tensor, patch: int, size: int) -> torch.Tensor:
    """Pixel boxes ``(B, 4)`` = ``(x0, y0, x1, y1)`` of ``patch``-px squares centred on ``centres``
    ``(B, 2)`` (x, y in [-1, 1] of the half-width, y down: pixel ``(c + 1) / 2 * size``), shifted
    to lie inside the ``size``-px frame where they would cross its border."""
    corner = ((centres.float() + 1) / 2 * size - patch / 2).clamp(0, size - patch)
    return torch.cat([corner, corner + patch], 1)


def crop_boxes(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The pixel ``boxes`` ``(B, 4)`` of the images ``x`` ``(B, C, H, W)``, each resized to
    ``size`` x ``size`` (bilinear; one ``grid_sample`` for the batch)."""
    h, w = x.shape[-2:]
    scale = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) / boxes.new_tensor([w, h])
    centre = (boxes[:, :2] + boxes[:, 2:]) / boxes.new_tensor([w, h]) - 1  # in [-1, 1]
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale[:, 0], scale[:, 1], centre
    grid = F.affine_grid(theta, (len(x), x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def tracked_pairs(clip: torch.Tensor, track: torch.Tensor, gap: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each clip ``(B, T, 3, S, S)``: a random query frame ``t1`` and ``t2 = t1 + gap`` (``gap < T``);
    the patches at the object's centre (``track`` ``(B, T, 3)``: x, y, scale) in both, resized to S."""
    b, t, _, s, _ = clip.shape
    if not 1 <= gap < t:
        raise ValueError(f"a gap of {gap} frames does not fit clips of {t} frames")
    t1 = torch.randint(0, t - gap, (b,), device=clip.device)
    rows = torch.arange(b, device=clip.device)
    cut = [crop_boxes(clip[rows, f], patch_boxes(track[rows, f, :2], patch, s), s) for f in (t1, t1 + gap)]
    return cut[0], cut[1]


def pair_similarities(query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines of each query ``(B, D)`` to its own key (``pos`` ``(B,)``) and to the keys of the
    other clips (``neg`` ``(B, N - 1)``); under ``torch.distributed`` the keys of every rank's
    batch (N = the global batch), gathered with their gradients."""
    q, k = F.normalize(query.float(), dim=1), F.normalize(key.float(), dim=1)
    keys = gather_with_grad(k)
    sim = q @ keys.T  # (B, N)
    own = rank() * len(q) + torch.arange(len(q), device=q.device)
    mine = F.one_hot(own, len(keys)).bool()
    return sim[mine], sim[~mine].view(len(q), len(keys) - 1)


def ranking_loss(pos: torch.Tensor, neg: torch.Tensor, margin: float, hard: int) -> torch.Tensor:
    """Wang & Gupta's eq. 1 on cosine similarities: ``max(0, D(X, X+) - D(X, X-) + M)`` with
    ``D = 1 - cos``, i.e. ``max(0, cos(X, X-) - cos(X, X+) + M)``, over the ``hard`` negatives
    of each query with the largest loss (the closest ones), averaged over negatives and queries."""
    hardest = neg.topk(min(hard, neg.shape[1]), dim=1).values
    return F.relu(hardest - pos[:, None] + margin).mean()


@register
class Tracking(Method):
    """A patch and where its object is a second later against other clips' patches (Wang & Gupta 2015)."""

    name = "tracking"
    Settings = TrackingSettings
    contrastive = True
    needs = ("clip", "track")

    @classmethod
    def check_config(cls, settings, info):
        size = info.image_size
        if settings.patch > size:
            raise UserError(f"tracking: a {settings.patch}-px patch is larger than the {size}-px frames: "
                            f"use patch <= {size} (or larger frames, data.image_size)")
        if settings.patch < MIN_PATCH:
            raise UserError(f"tracking: a {settings.patch}-px patch is too small: use patch >= {MIN_PATCH}")
        if 0 < info.frames < 2:
            raise UserError(f"tracking: clips of {info.frames} frame leave nothing to track: use data.frames >= 2")
        if info.frames and settings.gap >= info.frames:
            raise UserError(f"tracking: a gap of {settings.gap} frames does not fit clips of {info.frames} frames: "
                            f"use gap <= {info.frames - 1} (or more frames, data.frames)")
        if 0 < info.batch_size < 2:
            raise UserError("tracking: a batch of one clip has no other clips for negatives: use optim.batch_size >= 2")
        if settings.loss == "ranking" and 0 < info.batch_size <= settings.hard_negatives:
            raise UserError(f"tracking: hard_negatives={settings.hard_negatives} is more than the "
                            f"{info.batch_size - 1} other clips of a batch of {info.batch_size}: use hard_negatives "
                            f"<= {info.batch_size - 1} (or a larger optim.batch_size)")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.embed_dim
        self.head = linear_head(trunk.out_dim, settings.embed_dim, settings.head_hidden or trunk.out_dim)

    def forward(self, views, y, idx, clip, track):
        s = self.settings
        query, tracked = tracked_pairs(clip, track, s.gap, s.patch)
        zq, zk = self.head(shuffled(self.trunk, torch.cat([query, tracked]))).chunk(2)
        pos, neg = pair_similarities(zq, zk)
        if s.loss == "ranking":
            loss = ranking_loss(pos, neg, s.margin, s.hard_negatives)
        else:
            loss = info_nce(pos, neg, s.temperature)
        acc = (pos > neg.amax(1)).float().mean().detach()
        return {"loss": loss, "acc": acc, "embed_std": embedding_std(zq)}
