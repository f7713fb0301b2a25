"""``synthetic_video``: the generated clips of :mod:`.video` as a data source (issue 16).

A split is held in memory as a :class:`ClipSet`: every clip's frames ``(N, T, 3, S, S)`` uint8, its
sound track ``(N, L)`` float32 and the object's track (centre ``x``, ``y`` and ``scale`` per frame).
To everything that reads images (the probes, kNN, retrieval, invariance, image methods' views) a
clip is one still: its middle frame, with that frame's recorded factors (hue, background hue,
position, scale, angle, lighting, texture, and the pose: ``swing`` = sin of the limb's phase, the
limb's place in its swing, and ``limb``, its angle as a fraction of a turn).

:class:`ClipSource` serves the training epochs: each batch's stills are one frame per clip drawn at
random (by the run's seed and epoch: an image method on frames sees every frame over the epochs),
and its :attr:`Batch.extra` carries what video methods ask for: ``clip`` (the frames), ``audio``
(the waveform), ``track`` (``(B, T, 3)``: x, y, scale per frame) and ``frame`` (the index of the
still's frame in its clip).
"""

from __future__ import annotations

import numpy as np
import torch

from .cache import cache_dir, cached
from .imageset import ImageSet, check_memory
from .source import Batch, MemorySource, Pending, epoch_order, rank_slices
from .video import CLASSES, FPS, SAMPLE_RATE, generate_clips

SIZES = {"train": 5_000, "test": 1_000}
#: what a ClipSource's batches carry beyond the stills (a method's ``needs`` must be among them)
OFFERS = ("clip", "audio", "track", "frame")
_PER_CLIP = ("hue", "texture", "noise")
_PER_FRAME = ("x", "y", "scale", "angle", "bg_hue", "light", "phase", "limb_angle")


class ClipSet(ImageSet):
    """A split of clips: :class:`ImageSet` of the middle frames, plus the whole clips."""

    def __init__(self, clips: torch.Tensor, labels: torch.Tensor, audio: torch.Tensor,
                 per_frame: dict[str, torch.Tensor], per_clip: dict[str, torch.Tensor], split: str):
        mid = clips.shape[1] // 2
        factors = {k: v[:, mid] for k, v in per_frame.items() if k not in ("phase", "limb_angle")}
        factors.update(per_clip)
        factors["swing"] = torch.sin(per_frame["phase"][:, mid])
        factors["limb"] = torch.remainder(per_frame["limb_angle"][:, mid] / 360.0, 1.0)
        super().__init__(clips[:, mid], labels, list(CLASSES), "synthetic_video", split, factors)
        self.clips, self.audio = clips, audio
        self.track = torch.stack([per_frame["x"], per_frame["y"], per_frame["scale"]], -1)

    @property
    def frames(self) -> int:
        return int(self.clips.shape[1])

    def extra(self, idx: torch.Tensor, frame: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"clip": self.clips[idx], "audio": self.audio[idx], "track": self.track[idx], "frame": frame}


def clip_set(video: np.ndarray, labels: np.ndarray, audio: np.ndarray, factors: dict, split: str) -> ClipSet:
    """A :class:`ClipSet` from :func:`~sslray.data.video.generate_clips`'s arrays (or the cache's)."""
    t = {k: torch.from_numpy(np.asarray(factors[k], np.float32)) for k in _PER_CLIP + _PER_FRAME}
    return ClipSet(torch.from_numpy(video), torch.from_numpy(labels), torch.from_numpy(audio),
                   {k: t[k] for k in _PER_FRAME}, {k: t[k] for k in _PER_CLIP}, split)


def load_clips(split: str, seed: int, size: int, n: int, frames: int) -> ClipSet:
    """``n`` generated clips of ``frames`` frames at ``size`` px, cached in the data cache."""
    def make():
        check_memory(n * frames, size, f"synthetic_video {split} clips")
        video, labels, audio, factors = generate_clips(n, frames, size, seed, split)
        return dict(frames=video, labels=labels, audio=audio, **{f"factor_{k}": factors[k]
                                                                  for k in _PER_CLIP + _PER_FRAME})

    z = cached(cache_dir() / f"clips-v1-seed{seed}-{split}-{n}-{frames}f-{size}px.npz", make)
    video, labels, audio = z["frames"], z["labels"], z["audio"]
    factors = {k: z[f"factor_{k}"] for k in _PER_CLIP + _PER_FRAME}
    return clip_set(video, labels, audio, factors, split)


class ClipSource(MemorySource):
    """A split of clips in memory (see the module docstring)."""

    offers = OFFERS
    sample_rate = SAMPLE_RATE
    fps = FPS

    def __init__(self, data: ClipSet | Pending):
        super().__init__(data)
        self.frames = data.frames

    def _frames(self, seed: int, epoch: int) -> torch.Tensor:
        """The still's frame of every clip in this epoch: random, by (seed, epoch, clip)."""
        g = torch.Generator().manual_seed(seed * 7_919 + epoch * 104_729 + 17)
        return torch.randint(0, self.frames, (len(self.data),), generator=g)

    def epoch(self, epoch, global_batch, seed, rank=0, world=1, views=()):
        data: ClipSet = self.data
        frames = self._frames(seed, epoch)
        for idx in rank_slices(epoch_order(len(data), seed, epoch), global_batch, rank, world):
            frame = frames[idx]
            yield Batch([data.clips[idx, frame]], data.labels[idx], idx, cut=False, extra=data.extra(idx, frame))

    def scan(self, batch_size: int, views=()):
        """Every clip once, in index order; the stills are the middle frames."""
        data: ClipSet = self.data
        for start in range(0, len(data), batch_size):
            idx = torch.arange(start, min(len(data), start + batch_size))
            mid = torch.full((len(idx),), data.frames // 2)
            yield Batch([data.images[idx]], data.labels[idx], idx, cut=False, extra=data.extra(idx, mid))

    def describe(self) -> dict:
        return {**super().describe(), "resolved.data.frames": self.frames,
                "resolved.data.sample_rate": self.sample_rate}
