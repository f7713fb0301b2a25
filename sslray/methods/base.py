"""What every method is: a trunk, a head and a loss, trained by the shared loop.

A method is an ``nn.Module`` whose ``forward`` *is* its training step: it takes the batch's views
(the inputs it declares with :meth:`Method.views`, float images in [0, 1]; the trunk normalises
them itself), their labels and their stable dataset indices, and returns a dict with the ``loss``
to minimise and any metrics to log (``acc`` for the pretext accuracy). Making the step
``forward`` lets ``DistributedDataParallel`` wrap a method unchanged. State such as a memory bank
lives in buffers, so it checkpoints with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..config import Strict  # every method's Settings derives from it: typed, unknown keys rejected
from ..data.views import CENTRE, View


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about its training data."""

    num_classes: int
    num_train: int
    image_size: int
    #: the global batch size (0: not known, e.g. a method built outside a run)
    batch_size: int = 0
    #: what the data's batches carry beyond their images (:attr:`~sslray.data.source.Batch.extra`)
    offers: tuple[str, ...] = ()
    frames: int = 0  # frames per clip (0: stills)
    sample_rate: int = 0  # Hz of the sound track (0: no sound)
    fps: int = 0  # frames per second of a clip
    epochs: int = 0  # the run's training epochs (0: not known)

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the whole run (0: not known), as the shared loop counts them: every
        epoch ``max(1, num_train // batch_size)`` (the last incomplete batch dropped)."""
        if not (self.epochs and self.num_train and self.batch_size):
            return 0
        return self.epochs * max(1, self.num_train // self.batch_size)


@dataclass
class Afterwards:
    """What a method adds to its run's evaluation once it has trained (:meth:`Method.after_training`):
    metrics, figures, and features of a part other than the trunk to probe linearly (``{name:
    (train_x, train_y, test_x, test_y)}``: the run logs ``<name>/top1``)."""

    metrics: dict[str, float] = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    features: dict[str, tuple] = field(default_factory=dict)


class Method(nn.Module):
    name: ClassVar[str] = ""
    Settings: ClassVar[type[Strict]] = Strict
    #: False for baselines that are evaluated without training (``random``)
    trains: ClassVar[bool] = True
    #: True for methods that train on the labels (``supervised``): refused on an unlabelled collection
    needs_labels: ClassVar[bool] = False
    #: True for methods that contrast samples of a batch and run the trunk through
    #: :func:`~sslray.components.shuffle.shuffled` (they honour ``trunk.norm=shuffle_batch``)
    contrastive: ClassVar[bool] = False
    #: what ``forward`` takes of :attr:`Batch.extra` as keyword arguments (video methods: ``clip``,
    #: ``audio``, ``track``, ``frame``); uint8 ones arrive as floats in [0, 1]
    needs: ClassVar[tuple[str, ...]] = ()
    #: the size of the embedding whose spread the training step reports as ``embed_std`` (what the
    #: collapse rule scales it by); None: the method reports no such embedding
    embed_dim: int | None = None

    def __init__(self, settings: Strict, trunk: nn.Module, info: DataInfo):
        super().__init__()
        self.settings = settings
        self.trunk = trunk
        self.info = info

    def forward(self, views: list[torch.Tensor], y: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def views(cls, settings: Strict, image_size: int) -> tuple[View, ...]:
        """The inputs this method needs of every image (default: the image, resized and centre-cropped
        to the data's size). A data source cuts them; random-resized crops from the original image."""
        return (CENTRE,)

    def input_views(self) -> list[View]:
        """:meth:`views` with every size resolved for this run's data."""
        return [v.at(self.info.image_size) for v in self.views(self.settings, self.info.image_size)]

    @classmethod
    def check_config(cls, settings: Strict, info: DataInfo) -> None:
        """Reject settings that cannot work with data of this shape (raise UserError), from the
        configuration alone, before any data is read or decoded: ``info`` knows the image size, the
        global batch and the clips' frames and sound, not yet the classes or the number of images."""

    @classmethod
    def check(cls, settings: Strict, info: DataInfo) -> None:
        """Reject settings that cannot work with this data (raise UserError), before any run."""

    def setup(self, train) -> None:
        """Called once with the training :class:`~sslray.data.ImageSet` before training (e.g.
        ClusterFit's cluster step). Raise UserError for problems the user can fix."""

    def describe(self) -> dict:
        """Extra params to log with the run (e.g. a permutation set's Hamming distances)."""
        return {}

    def run_tags(self) -> dict:
        """Extra MLflow tags for the run (e.g. ``mlflow.parentRunId`` linking to a source run)."""
        return {}

    def figures(self) -> dict:
        """Figures to keep with the run after training, ``{file name: matplotlib figure}`` (e.g. an
        energy-based model's negatives); the caller saves and logs them."""
        return {}

    def after_training(self, train, test) -> Afterwards:
        """What this method adds to the evaluation after training, given the training and test
        sources (default: :meth:`figures`); runs once, on the main process."""
        return Afterwards(figures=self.figures())

    def after_step(self) -> None:
        """Called after each optimiser step (e.g. a momentum encoder's update)."""

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(1) == target).float().mean().detach()
