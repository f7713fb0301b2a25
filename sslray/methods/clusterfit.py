"""ClusterFit (Yan et al. 2020, "ClusterFit: improving generalization of visual
representations"); its distillation baseline is :mod:`sslray.methods.distill`.

Cluster step: the trunk of a finished run (the *source*) embeds the training set at one layer
(pooled as in the evaluation), spherical k-means with faiss makes K pseudo-classes. Fit step: a
new trunk, from scratch, learns to predict each image's cluster with cross-entropy under crop +
flip. The two MLflow runs are linked (``mlflow.parentRunId``). The cluster step runs once, where the
run is built (:meth:`ClusterFit.setup`); the cluster ids travel to every training worker with the
method's state.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from ..components.distributed import default_device
from ..components.inputs import scan_features
from ..components.kmeans import spherical_kmeans
from ..config import MAX_FEATURE_DIM, MAX_IMAGE_SIZE, WHOLE, Layer, Seed, unbounded
from ..errors import UserError
from ..models import extract_features
from ..tracking.tags import PARENT_TAG, SOURCE_RUN_TAG
from . import register
from .baselines import check_pad
from ._source import find_source, load_source_trunk, source_noise
from ..components.augment import hflip, pad_crop
from .base import Method, Strict, accuracy

PAPER_CLUSTERS = 16000
#: k-means sample of a streamed split (held in memory, at the data's size) unless kmeans_sample says
STREAM_SAMPLE = 50_000


class ClusterFitSettings(Strict):
    source: str = Field("", description="the finished run to cluster with: a run folder or an MLflow run id")
    runs: str = Field("runs", description="the folder holding the source run when it is named by MLflow run id")
    layer: Layer = Field("res5", description="the source layer whose (pooled) features are clustered")
    clusters: int | None = Field(None, ge=2, json_schema_extra=unbounded(
        "more clusters than training images is refused once the data is known"),
        description=f"K; default N/20 capped at the paper's {PAPER_CLUSTERS}")
    feature_dim: int = Field(9216, ge=1, le=MAX_FEATURE_DIM, description="pooling of the source layer (as "
                                                                         "eval.feature_dim)")
    kmeans_iters: int = Field(20, ge=1, le=1000)
    kmeans_seed: Seed = 0
    kmeans_sample: int | None = Field(None, ge=2, json_schema_extra=unbounded(WHOLE),
                                      description="images (class-balanced) whose features k-means sees; every image "
                                                  "is then assigned its nearest centroid (default: all of a split in "
                                                  f"memory, {STREAM_SAMPLE:,} of a streamed one)")
    pad: int = Field(4, ge=0, le=MAX_IMAGE_SIZE // 2, description="random-crop padding of the fit step (0 = no crop; "
                                                                  "at most half the image)")

    @field_validator("source", "runs")
    @classmethod
    def _absolute(cls, v: str) -> str:
        """Paths made absolute where the run is configured: Ray workers run in other folders."""
        return str(Path(v).resolve()) if v and Path(v).exists() else v


@torch.no_grad()
def nearest_centroid(trunk, data, centroids: torch.Tensor, layer: str, feature_dim: int, device,
                     batch_size: int = 256) -> torch.Tensor:
    """Every image of a data source assigned its nearest centroid (cosine), one streamed pass."""
    labels = torch.zeros(len(data), dtype=torch.long)
    c = F.normalize(centroids.float(), dim=1).to(device)
    for batch, f in scan_features(trunk, data, [layer], feature_dim, device, batch_size):
        labels[batch.index] = (F.normalize(f[layer], dim=1) @ c.T).argmax(1).cpu()
    return labels


def resolve_clusters(settings, num_train: int) -> int:
    k = settings.clusters or max(2, min(PAPER_CLUSTERS, num_train // 20))
    if k > num_train:
        raise UserError(f"clusters={k} is more than the {num_train} training images")
    return k


@register
class ClusterFit(Method):
    """Train a new trunk to predict k-means clusters of a finished run's features (Yan et al. 2020)."""

    name = "clusterfit"
    Settings = ClusterFitSettings

    @classmethod
    def check_config(cls, settings, info):
        check_pad(cls.name, settings.pad, info.image_size)

    @classmethod
    def check(cls, settings, info):
        find_source(settings.source, settings.runs, cls.name)
        resolve_clusters(settings, info.num_train)

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.source = find_source(settings.source, settings.runs, self.name)
        self.k = resolve_clusters(settings, info.num_train)
        self.head = torch.nn.Linear(trunk.out_dim, self.k)
        self.register_buffer("targets", torch.zeros(info.num_train, dtype=torch.long))  # cluster id per training index
        self.stats: dict = {}

    def source_trunk(self):
        return load_source_trunk(self.source)

    def setup(self, train):
        """The cluster step: spherical k-means of the source's features of the training images (of
        ``kmeans_sample`` of them), then every training image's nearest centroid, streamed."""
        s = self.settings
        teacher = self.source_trunk()
        dev = default_device()
        was = next(teacher.parameters()).device
        teacher.to(dev)
        sample = train.subset(s.kmeans_sample or (None if train.held else STREAM_SAMPLE))
        feats = extract_features(teacher, sample.images, [s.layer], s.feature_dim, device=dev,
                                 desc="source features")[s.layer]
        result = spherical_kmeans(feats, self.k, s.kmeans_seed, s.kmeans_iters)
        if len(sample) == len(train) and train.held:  # the sample is the set, in index order
            self.targets.copy_(result.labels)
        else:
            self.targets.copy_(nearest_centroid(teacher, train, result.centroids, s.layer, s.feature_dim, dev))
        teacher.to(was)
        self.stats = {**result.stats(), "kmeans_sample": len(sample)}
        return result

    def describe(self):
        return {"clusters": self.k, "layer": self.settings.layer, "source_method": self.source.method, **self.stats,
                **source_noise(self.source)}

    def run_tags(self):
        return {PARENT_TAG: self.source.mlflow_run_id,
                SOURCE_RUN_TAG: str(self.source.run_dir.path.resolve())}

    def augment(self, x):
        return hflip(pad_crop(x, self.settings.pad) if self.settings.pad else x)

    def forward(self, views, y, idx):
        x = views[0]
        logits = self.head(self.trunk(self.augment(x)))
        target = self.targets[idx]
        return {"loss": F.cross_entropy(logits, target), "acc": accuracy(logits, target)}
