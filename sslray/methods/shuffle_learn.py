"""Shuffle & Learn (Misra, Zitnick & Hebert 2016, "Shuffle and learn: unsupervised learning using
temporal order verification"): is a tuple of three frames of a clip in temporal order?

From a window of five frames ``a < b < c < d < e`` (``gap`` frames apart) a positive tuple is
``(b, c, d)`` and a negative one puts a frame from outside in the middle, ``(b, a, d)`` or
``(b, e, d)``; either may be read backwards (the paper counts reversed order as correct: the
direction of an action is ambiguous). Windows are drawn where the clip moves: in proportion to
their motion, the mean absolute difference of consecutive frames (the paper samples high-motion
windows by optical flow). Clips of 3 or 4 frames use three consecutive frames, the negative
swapping the middle frame with an outer one. Each frame goes through the shared trunk (a triplet
siamese network), a shared fc + ReLU per frame, the three concatenated in order, a 2-way
classifier. Departures: the positive share is ``positive_fraction`` (default 0.5, balanced), and
the per-frame layer is ``frame_dim`` wide (the paper's fc7 at AlexNet width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..components.heads import TileHead
from ..config import MAX_DIM, MAX_FRAMES
from ..errors import UserError
from . import register
from .base import Method, Strict, accuracy


class ShuffleLearnSettings(Strict):
    gap: int = Field(3, ge=1, le=(MAX_FRAMES - 1) // 4, description="frames between the five frames of a window (a "
                                                                    "window spans 4 x gap + 1 frames; shortened to "
                                                                    "fit the clip). 3 at 8 frames/s: the limb moves "
                                                                    "far enough between frames to tell their order "
                                                                    "(gap 2 learned far slower here)")
    positive_fraction: float = Field(0.5, gt=0, lt=1, description="share of tuples in order")
    motion_weighted: bool = Field(True, description="draw windows in proportion to their motion (mean absolute "
                                                    "frame difference), as the paper samples high-motion windows")
    frame_dim: int = Field(128, ge=1, le=MAX_DIM, description="width of the shared per-frame layer before "
                                                              "concatenation")
    head_hidden: int = Field(0, ge=0, le=MAX_DIM, description="0 = linear classifier on the concatenation; >0 = MLP "
                                                              "hidden size")


def motion(clip: torch.Tensor) -> torch.Tensor:
    """``(B, T - 1)``: mean absolute difference between consecutive frames of ``(B, T, C, H, W)`` clips."""
    return (clip[:, 1:] - clip[:, :-1]).abs().flatten(2).mean(2)


def make_tuples(moving: torch.Tensor, gap: int, positive_fraction: float, weighted: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frames (B, 3), label (B,))`` for clips whose motion between consecutive frames is
    ``moving`` ``(B, T - 1)``: label 1 exactly when the three frames are in order, forwards or backwards."""
    b, frames = moving.shape[0], moving.shape[1] + 1
    if frames < 3:
        raise ValueError(f"a tuple needs clips of at least 3 frames, not {frames}")
    g = min(gap, (frames - 1) // 4)
    span = 4 * g if g else 2
    dev = moving.device
    # window motion: the sum of the frame-to-frame motion inside each window start's span
    cum = F.pad(moving.float().cumsum(1), (1, 0))
    starts = torch.arange(frames - span, device=dev)
    weight = (cum[:, starts + span] - cum[:, starts]).clamp_min(0) + 1e-6 if weighted else torch.ones(b, len(starts), device=dev)
    s = torch.multinomial(weight, 1, generator=generator).squeeze(1)
    r = lambda: torch.rand(b, generator=generator, device=dev)  # noqa: E731
    positive = r() < positive_fraction
    if g:
        a, bb, c, d, e = (s + k * g for k in range(5))
        middle = torch.where(positive, c, torch.where(r() < 0.5, a, e))
        first, last = bb, d
    else:  # three consecutive frames; a negative swaps the middle with an outer frame
        lo, mid, hi = s, s + 1, s + 2
        swap_first = r() < 0.5
        first = torch.where(positive, lo, torch.where(swap_first, mid, lo))
        middle = torch.where(positive, mid, torch.where(swap_first, lo, hi))
        last = torch.where(positive, hi, torch.where(swap_first, hi, mid))
    tuples = torch.stack([first, middle, last], 1)
    backwards = r() < 0.5
    tuples = torch.where(backwards[:, None], tuples.flip(1), tuples)
    return tuples, positive.long()


def in_order(frames: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``(B, 3)`` frame indices is strictly monotonic (the tuple's true label)."""
    up = (frames[:, 0] < frames[:, 1]) & (frames[:, 1] < frames[:, 2])
    down = (frames[:, 0] > frames[:, 1]) & (frames[:, 1] > frames[:, 2])
    return up | down


@register
class ShuffleLearn(Method):
    """Tell a tuple of three frames in temporal order from one shuffled (Shuffle & Learn; Misra et al. 2016)."""

    name = "shuffle_learn"
    Settings = ShuffleLearnSettings
    needs = ("clip",)

    @classmethod
    def check_config(cls, settings, info):
        if info.frames and info.frames < 3:
            raise UserError(f"shuffle_learn: a tuple of three frames needs clips of at least 3 frames, not "
                            f"data.frames={info.frames}")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.head = TileHead(trunk.out_dim, 3, settings.frame_dim, 2, settings.head_hidden)

    def forward(self, views, y, idx, clip):
        s = self.settings
        frames, target = make_tuples(motion(clip), s.gap, s.positive_fraction, s.motion_weighted)
        rows = torch.arange(len(clip), device=clip.device)[:, None]
        x = clip[rows, frames]  # (B, 3, C, H, W)
        feats = self.trunk(x.flatten(0, 1).contiguous(memory_format=torch.channels_last))
        logits = self.head(feats.view(len(clip), 3, -1))
        return {"loss": F.cross_entropy(logits, target), "acc": accuracy(logits, target)}
