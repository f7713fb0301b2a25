"""DINO (Caron et al. 2021, "Emerging properties in self-supervised vision transformers") on the
ResNet trunk: a student (trunk + head) matches the softmax of an EMA teacher's output on the
other crops; the teacher's outputs are centred (a running mean over the global batch) and
sharpened (a low temperature, warmed up), which together keep it from collapsing. Multi-crop:
``global_crops`` large crops go to both networks, ``local_crops`` small ones to the student only.

Departures, for 32-px images and short runs: teacher momentum 0.99 (the paper: 0.996) rising to 1
on a cosine; ``out_dim`` 4,096 (the paper: 65,536); local crops of 3/7 of the image side (the
paper's 96 of 224 px), 14 px at 32; the teacher temperature warms up from 0.04 to 0.07 over
the first 30 % of the run (the paper: 30 of 100 epochs). Gradient clipping (the paper: 3.0) is the
loop's ``train.clip_grad``, off by default. Not done: freezing the last layer in the first epoch."""

from __future__ import annotations

import torch
from pydantic import Field

from ..components.heads import DINOHead
from ..components.losses import embedding_std
from ..components.negative_free import cosine_rise, dino_loss, linear_warmup, update_center
from ..components.queue import frozen_copy, momentum_update
from ..config import MAX_DIM, MAX_IMAGE_SIZE, MAX_TEMPERATURE
from ..data.views import crop
from ..errors import UserError
from . import register
from ._contrastive import MAX_STRENGTH, photometric
from .base import Method, Strict

GLOBAL_SCALE, LOCAL_SCALE = (0.4, 1.0), (0.05, 0.4)


class DINOSettings(Strict):
    out_dim: int = Field(4096, ge=2, le=65_536, description="K, the head's output dimension (the paper: 65,536)")
    hidden: int = Field(2048, ge=1, le=MAX_DIM, description="head MLP hidden size")
    proj_dim: int = Field(256, ge=2, le=MAX_DIM, description="the head's L2-normalised bottleneck")
    student_temp: float = Field(0.1, gt=0, le=MAX_TEMPERATURE, description="tau_s")
    teacher_temp: float = Field(0.07, gt=0, le=MAX_TEMPERATURE, description="tau_t after the warm-up")
    warmup_teacher_temp: float = Field(0.04, gt=0, le=MAX_TEMPERATURE, description="tau_t at the start")
    teacher_warmup: float = Field(0.3, ge=0, le=1, description="share of the run over which tau_t warms up")
    center_momentum: float = Field(0.9, ge=0, le=1, description="m of the centre's running mean")
    ema: float = Field(0.99, ge=0, le=1, description="the teacher's base momentum, rising to 1 on a cosine")
    global_crops: int = Field(2, ge=2, le=4, description="large crops, seen by teacher and student")
    local_crops: int = Field(6, ge=0, le=16, description="small crops, seen by the student only (the paper's "
                                                         "ResNet-50: 6)")
    local_size: int | None = Field(None, ge=8, le=MAX_IMAGE_SIZE, description="side of the local crops in px "
                                                                              "(default 3/7 of the image's)")
    strength: float = Field(0.5, ge=0, le=MAX_STRENGTH, description="colour jitter strength of the augmentation")


def local_side(settings, image_size: int) -> int:
    return settings.local_size or max(8, round(image_size * 3 / 7))


@register
class DINO(Method):
    """A student matches a centred, sharpened EMA teacher across multi-crop views (DINO; Caron et al. 2021)."""

    name = "dino"
    Settings = DINOSettings

    @classmethod
    def check_config(cls, settings, info):
        if settings.local_size and settings.local_size > info.image_size:
            raise UserError(f"dino: local crops of {settings.local_size} px are larger than the {info.image_size}-px "
                            f"global ones: use local_size <= {info.image_size}")

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.embed_dim = settings.proj_dim
        s = settings
        self.head = DINOHead(trunk.out_dim, s.out_dim, s.hidden, s.proj_dim)
        self.teacher_trunk, self.teacher_head = frozen_copy(trunk), frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(s.out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @classmethod
    def views(cls, settings, image_size):
        return ((crop(GLOBAL_SCALE),) * settings.global_crops
                + (crop(LOCAL_SCALE, local_side(settings, image_size)),) * settings.local_crops)

    def teacher_temp(self) -> float:
        s, total = self.settings, self.info.total_steps
        return linear_warmup(s.warmup_teacher_temp, s.teacher_temp, int(self.step), round(s.teacher_warmup * total))

    def forward(self, views, y, idx):
        s = self.settings
        views = [photometric(v, s.strength) for v in views]
        n, g = len(views[0]), s.global_crops
        glob = torch.cat(views[:g])
        logits, emb = self.head(self.trunk(glob))
        student = list(logits.split(n))
        if s.local_crops:
            student += list(self.head(self.trunk(torch.cat(views[g:])))[0].split(n))
        with torch.no_grad():
            t = self.teacher_head(self.teacher_trunk(glob))[0]
        loss = dino_loss(student, list(t.split(n)), self.center, s.student_temp, self.teacher_temp())
        update_center(self.center, t, s.center_momentum)
        return {"loss": loss, "embed_std": embedding_std(emb[:n]), "teacher_temp": self.teacher_temp()}

    def after_step(self):
        total = self.info.total_steps
        m = cosine_rise(self.settings.ema, int(self.step), total) if total else self.settings.ema
        momentum_update(self.trunk, self.teacher_trunk, m)
        momentum_update(self.head, self.teacher_head, m)
        self.step += 1
