"""How invariant each layer is to a transform, and which nuisance factors it keeps
(:mod:`sslray.eval.invariance`): per transform of ``eval.invariance.transforms``, the cosine of the
features of an image and of its transformed copy, and a linear probe's top-1 at telling which
variant was applied (chance = invariant); on data that records factors, each factor's held-out R^2
from the layer's features. Runs on the test images :class:`Scan` holds in memory, with the linear
protocol's probe settings."""

from __future__ import annotations

from pydantic import Field, field_validator

from ...config import Strict
from ..transforms import TRANSFORMS
from . import Protocol, Result, register, settings_of


class InvarianceSettings(Strict):
    transforms: list[str] = Field(default_factory=lambda: ["rotation", "jigsaw", "color", "crop"],
                                  description=f"transforms to measure invariance to, per layer: {', '.join(TRANSFORMS)}")

    @field_validator("transforms")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transform(s) {', '.join(map(repr, unknown))}; known: {', '.join(TRANSFORMS)}")
        return v


@register
class Invariance(Protocol):
    name = "invariance"
    Settings = InvarianceSettings
    own_heads = ("factor",)
    renamed = {"invariance": ""}
    hint = "eval.invariance.transforms=[...] and invariance in eval.protocols"

    @classmethod
    def from_flat(cls, value) -> dict:
        """The block an older config's ``eval.invariance: [rotation, ...]`` meant."""
        return {"transforms": list(value)}

    def run(self, scan) -> list[Result]:
        from ..invariance import measure_invariance

        c = scan.cfg
        return measure_invariance(scan.trunk, scan.test_set, c.layers, c.feature_dim, self.settings.transforms,
                                  settings_of(c, "linear"), scan.seed, self.name)
