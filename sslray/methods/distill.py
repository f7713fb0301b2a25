"""Distillation, ClusterFit's baseline (Yan et al. 2020, sec. 4; Hinton et al. 2015, "Distilling
the knowledge in a neural network"): a new trunk fits the soft predictions of a finished run's
frozen trunk, over ClusterFit's k-means clusters or over the source's own classifier.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.losses import soft_cross_entropy
from ..config import MAX_TEMPERATURE
from ..errors import UserError
from ..models import pool_size, pooled_taps
from . import register
from .base import accuracy
from .clusterfit import ClusterFit, ClusterFitSettings
from ._source import source_noise


def source_head(src) -> torch.nn.Linear:
    """The classifier of a finished run that has one (``head.weight``/``head.bias`` in its
    checkpoint: a supervised run), as a Linear layer."""
    from ..tracking import RunDir
    from ..tracking.rundir import load_torch

    state = load_torch(src.run_dir.file(RunDir.CHECKPOINT), "checkpoint").get("model", {})
    if "head.weight" not in state or "head.bias" not in state or state["head.weight"].dim() != 2:
        raise UserError(f"distill: source {src.run_dir} ({src.method}) has no classifier head; targets=classifier "
                        f"needs a supervised run (or use targets=clusters)")
    head = torch.nn.Linear(state["head.weight"].shape[1], state["head.weight"].shape[0])
    head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
    return head


class DistillSettings(ClusterFitSettings):
    temperature: float = Field(0.1, gt=0, le=MAX_TEMPERATURE, description="T of the source's softmax (over cosines to "
                                                                          "the centroids, or over its classifier's "
                                                                          "logits)")
    targets: Literal["clusters", "classifier"] = Field(
        "clusters", description="clusters: the source's soft assignment to ClusterFit's k-means clusters; "
                                "classifier: the source's own classifier (a supervised run's head), as Hinton et al.")


@register
class Distill(ClusterFit):
    """Distillation baseline for ClusterFit: fit the source's soft predictions over its k-means clusters.

    A self-supervised source has no classifier, so its "predictions" are defined on the same K
    clusters ClusterFit uses: ``p_k(x) = softmax_k(cos(phi(x), c_k) / T)``, with ``phi(x)`` the
    source's pooled features at ``layer`` and ``c_k`` the spherical k-means centroids. As T -> 0 this
    is ClusterFit's hard assignment; larger T passes on how close an image is to every cluster. The
    frozen source (teacher, BN in eval mode) sees the same augmented image as the new trunk
    (student), as in Hinton et al. 2015; the loss is the soft cross-entropy.
    """

    name = "distill"
    Settings = DistillSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        # the frozen teacher is a submodule: it moves to the device and checkpoints with the method
        self.teacher = super().source_trunk().eval().requires_grad_(False)
        if settings.targets == "classifier":
            head = source_head(self.source)
            self.k = head.out_features
            self.head = torch.nn.Linear(trunk.out_dim, self.k)
            self.teacher_head = head.eval().requires_grad_(False)
            return
        c, h, _ = self.teacher.tap_shapes(info.image_size)[settings.layer]
        side = pool_size(c, h, settings.feature_dim)
        self.register_buffer("centroids", torch.zeros(self.k, c * side * side))

    def source_trunk(self):
        return self.teacher

    def setup(self, train):
        if self.settings.targets == "clusters":
            self.centroids.copy_(super().setup(train).centroids)

    def describe(self):
        if self.settings.targets == "classifier":
            return {"classes": self.k, "source_method": self.source.method, **source_noise(self.source)}
        return super().describe()

    def train(self, mode: bool = True):
        super().train(mode)
        if "teacher" in self._modules:
            self.teacher.eval()  # BN running statistics of the source, never batch statistics
        return self

    @torch.no_grad()
    def soft_targets(self, x: torch.Tensor) -> torch.Tensor:
        if self.settings.targets == "classifier":
            return F.softmax(self.teacher_head(self.teacher(x)) / self.settings.temperature, dim=1)
        layer = self.settings.layer
        f = pooled_taps(self.teacher, x, [layer], self.settings.feature_dim)[layer]
        return F.softmax(F.normalize(f, dim=1) @ self.centroids.T / self.settings.temperature, dim=1)

    def forward(self, views, y, idx):
        x = views[0]
        x = self.augment(x)
        p = self.soft_targets(x)
        logits = self.head(self.trunk(x))
        return {"loss": soft_cross_entropy(logits, p), "acc": accuracy(logits, p.argmax(1))}
