"""What the contrastive methods share: their views and augmentation, and the number of negatives."""

from __future__ import annotations

import torch

from ..components.augment import color_jitter, hflip, random_grayscale
from ..data.views import crop
from ..errors import UserError

#: the random-resized crop of every contrastive view (MoCo v2's and SimCLR's CIFAR scale range),
#: cut by the data source, from the original image when it streams
CROP = crop((0.2, 1.0))
#: the strongest colour jitter: a brightness factor of 1 +- 0.8 s turns negative (inverts the image) above 1.25
MAX_STRENGTH = 1.25
#: why a number of negatives needs no upper bound of its own
NEGATIVES = "more than the other images of the training set is refused once the data is known"


def photometric(x: torch.Tensor, strength: float = 0.5) -> torch.Tensor:
    """The rest of SimCLR's augmentation (Chen et al. 2020, appendix A) after the crop, batched on
    the device: flip, colour jitter of ``strength`` s (0.8 s brightness/contrast/saturation, 0.2 s
    hue, p = 0.8) and grayscale (p = 0.2). No blur: it hurts at 32 px (the paper drops it for CIFAR-10)."""
    x = hflip(x)
    x = color_jitter(x, 0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength, p=0.8)
    return random_grayscale(x, p=0.2)


def augmented_pair(views: list[torch.Tensor], strength: float) -> torch.Tensor:
    """Both crops of a two-view method after :func:`photometric`, as one batch (first views, then
    second views): one pass of the trunk sees them together."""
    return torch.cat([photometric(views[0], strength), photometric(views[1], strength)])


def check_predictor(name: str, settings, paper_hidden: int) -> None:
    """A predictor switched on needs a hidden layer (BYOL, SimSiam): one line naming the paper's size."""
    if settings.predictor and settings.pred_hidden == 0:
        raise UserError(f"{name}: predictor: true needs a predictor hidden size: pred_hidden must be at least 1 "
                        f"(the paper's {paper_hidden}), or set predictor: false")


def resolve_negatives(requested: int | None, paper: int, num_train: int, what: str = "negatives") -> int:
    """The number of negatives: the paper's value capped at ``num_train - 1`` by default; an
    explicit value above ``num_train - 1`` is an error (there are not that many other images)."""
    if requested is None:
        return max(1, min(paper, num_train - 1))
    if requested > num_train - 1:
        raise UserError(f"{what}={requested} is more than the {num_train - 1} other images of the training set (the "
                        f"paper's {paper} needs a larger data set; leave it unset for {min(paper, num_train - 1)})")
    return requested
