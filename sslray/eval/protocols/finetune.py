"""Fine-tuning the whole trunk (PIRL's and SimCLR's second protocol): a copy of the pretrained trunk
plus a new linear head on its pooled ``res5``; every weight is updated (SGD with Nesterov momentum
0.9, cosine schedule; random pad-and-crop and flips unless ``eval.finetune.augment`` is off), scored
top-1 on the test split. The trunk that was passed in is left untouched. It trains on the data
source (memory or stream, :attr:`Scan.fit_train`); result ``top1`` of no layer."""

from __future__ import annotations

from pydantic import Field, PositiveInt

from ...config import MAX_BATCH, MAX_EPOCHS, MAX_LR, MAX_WEIGHT_DECAY, Strict
from . import Protocol, Result, register


class FinetuneSettings(Strict):
    epochs: PositiveInt = Field(10, le=MAX_EPOCHS, description="epochs")
    lr: float = Field(0.01, gt=0, le=MAX_LR, description="SGD lr (Nesterov momentum 0.9, cosine to 0)")
    weight_decay: float = Field(5e-4, ge=0, le=MAX_WEIGHT_DECAY)
    batch_size: PositiveInt = Field(128, le=MAX_BATCH)
    augment: bool = Field(True, description="random pad-and-crop (1/8 of the side) and flips")


@register
class Finetune(Protocol):
    name = "finetune"
    Settings = FinetuneSettings
    renamed = {"finetune_epochs": "epochs", "finetune_lr": "lr", "finetune_weight_decay": "weight_decay",
               "finetune_batch_size": "batch_size", "finetune_augment": "augment"}

    def run(self, scan) -> list[Result]:
        from ..finetune import finetune

        test = scan.fit_test
        top1 = finetune(scan.trunk, scan.fit_train, test, self.settings, scan.seed, scan.device)
        return [Result(self.name, "top1", top1, n=len(test))]

    @classmethod
    def lines(cls, results: list[Result]) -> list[str]:
        return [f"fine-tune (whole trunk)  {100 * r.value:.1f}" for r in results
                if r.protocol == cls.name and r.metric == "top1" and r.layer is None and not r.variant]
