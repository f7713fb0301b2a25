"""Low-shot evaluation (PIRL's semi-supervised table): class-balanced label subsets of the training
split, a fraction of every class (``eval.lowshot.fractions``, "1pct" for 0.01) or ``k`` images per
class (``eval.lowshot.shots``), drawn by ``eval.seed``; on each, the linear probe of every layer
(with the linear protocol's settings) and, when ``finetune`` is also asked, fine-tuning (with its
settings). Results: variant ``<subset>``: ``images``; ``<subset>/linear``: ``top1`` per layer;
``<subset>/finetune``: ``top1``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ...config import Strict, unbounded
from . import Protocol, Result, asked, register, settings_of, timed
from .linear import probe


class LowshotSettings(Strict):
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: [0.01, 0.1], description="label fractions of every class (in (0, 1])")
    shots: list[Annotated[int, Field(ge=1, json_schema_extra=unbounded(
        "k-shot of every class: a class with fewer images gives them all"))]] = Field(
        default_factory=list, description="images per class (k-shot)")


def lowshot_subsets(s: LowshotSettings) -> list[tuple[str, float | None, int | None]]:
    """``(name, fraction, shots)`` of every low-shot subset the settings ask for."""
    from ..finetune import subset_name

    return ([(subset_name(fraction=f), f, None) for f in s.fractions]
            + [(subset_name(shots=k), None, k) for k in s.shots])


@register
class Lowshot(Protocol):
    name = "lowshot"
    Settings = LowshotSettings
    renamed = {"lowshot_fractions": "fractions", "lowshot_shots": "shots"}

    def run(self, scan) -> list[Result]:
        from ...data import MemorySource
        from ..finetune import finetune, label_subset

        feats, c = scan.features(), scan.cfg
        linear = settings_of(c, "linear")
        ytr, yte = scan.train_set.labels, scan.test_set.labels
        subsets = lowshot_subsets(self.settings)
        out: list[Result] = []
        for name, fraction, shots in subsets:
            idx = label_subset(ytr, fraction, shots, scan.seed)
            out.append(Result(self.name, "images", len(idx), variant=name, n=len(idx)))
            for layer in c.layers:
                with timed(scan.timings, self.name):
                    got, _ = probe(feats["train"][layer][idx], ytr[idx], feats["test"][layer], yte, scan.num_classes,
                                   linear, scan.seed)
                out.append(Result(self.name, "top1", got["top1"][0], layer, f"{name}/linear", got["top1"][1]))
        if "finetune" in asked(c):
            ft, test = settings_of(c, "finetune"), scan.fit_test
            for name, fraction, shots in subsets:
                idx = label_subset(ytr, fraction, shots, scan.seed)
                top1 = finetune(scan.trunk, MemorySource(scan.train_set.subset(idx)), test, ft, scan.seed,
                                scan.device, desc=f"fine-tune {name}")
                out.append(Result(self.name, "top1", top1, variant=f"{name}/finetune", n=len(test)))
        return out

    @classmethod
    def title_of(cls, variant: str) -> str | None:
        name, _, probe_ = variant.partition("/")
        return f"linear, {name} labels" if probe_ == "linear" else None

    @classmethod
    def lines(cls, results: list[Result]) -> list[str]:
        return [f"fine-tune, {r.variant.split('/')[0]} labels  {100 * r.value:.1f}" for r in
                sorted(results, key=lambda r: r.variant)
                if r.protocol == cls.name and r.variant.endswith("/finetune") and r.metric == "top1"]
