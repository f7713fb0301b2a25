"""Views: the inputs a method asks of every image, declared in the method's own module.

A :class:`View` is either a random-resized crop (Szegedy et al. 2015; SimCLR's and MoCo's main
augmentation: a random area of ``scale`` of the image at a random aspect ratio in ``ratio``,
resized to ``size``) or the whole image resized and centre-cropped to ``size``. Every data source
honours the declaration: the in-memory source cuts views from its stored square images on the
device; the streaming source cuts them from the original, full-resolution image as it decodes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class View:
    size: int | None = None  # output side in px; None: the data's image_size
    scale: tuple[float, float] | None = None  # random-resized crop's area range; None: resize + centre crop
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    @property
    def random(self) -> bool:
        return self.scale is not None

    def at(self, image_size: int) -> "View":
        """This view with its size resolved for data of ``image_size`` px."""
        return View(self.size or image_size, self.scale, self.ratio)

    def describe(self) -> str:
        what = f"crop {self.scale[0]:g}-{self.scale[1]:g}" if self.random else "centre"
        return f"{what} -> {self.size or 'data'}px"


CENTRE = View()


def crop(scale: tuple[float, float] = (0.2, 1.0), size: int | None = None) -> View:
    return View(size, tuple(scale))


def crop_box(width: int, height: int, view: View, rng) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a view's crop in a ``width x height`` image, with ``rng`` (a numpy
    Generator). Random-resized crops follow torchvision's ``RandomResizedCrop.get_params``: up to
    ten draws of area and log-uniform aspect ratio that fit, else the centre crop of the clamped
    ratio; the centre view is the largest centred square."""
    if not view.random:
        side = min(width, height)
        return (width - side) // 2, (height - side) // 2, side, side
    area = width * height
    log_ratio = (math.log(view.ratio[0]), math.log(view.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*view.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(view.ratio):
        w, h = width, int(round(width / min(view.ratio)))
    elif in_ratio > max(view.ratio):
        w, h = int(round(height * max(view.ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h
