"""``synthetic_video``: generated clips of the shapes in motion with a sound track and object
tracks (:mod:`sslray.data.clips`), held in memory: the data of the video methods (image methods
see frames)."""

from __future__ import annotations

from functools import partial

from ...errors import UserError
from ..clips import OFFERS, SIZES, ClipSource, load_clips
from ..video import CLASSES, FPS, SAMPLE_RATE
from ..source import Pending
from . import register
from .base import Collection


@register
class SyntheticVideo(Collection):
    name = "synthetic_video"
    summary = ("generated clips of the shapes in motion with a sound track (5,000 training and 1,000 test clips "
               "unless limited; video methods; image methods see frames)")
    settings = ("seed", "frames")
    offers = OFFERS
    needs_root = False
    fps, sample_rate = FPS, SAMPLE_RATE

    def pending(self, cfg, split):
        n = (cfg.limit if split == "train" else cfg.test_limit) or SIZES[split]
        return Pending(n, list(CLASSES), cfg.image_size, split,
                       partial(load_clips, split, cfg.seed, cfg.image_size, n, cfg.frames), cfg.frames)

    def open(self, cfg):
        if cfg.source == "stream" or not cfg.labels:
            raise UserError(f"data.name={self.name} is generated and held in memory, with its labels: leave "
                            "data.source at auto and data.labels at true")
        return ClipSource(self.pending(cfg, "train")), ClipSource(self.pending(cfg, "test"))
