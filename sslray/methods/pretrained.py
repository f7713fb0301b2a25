"""``pretrained``: a finished run's trunk, evaluated as it is (no training) — the "pretrained
network" line beside distillation and ClusterFit from the same source (the label-noise study), or
any run re-evaluated under another study's protocol."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from ..errors import UserError
from ..tracking.tags import PARENT_TAG, SOURCE_RUN_TAG
from . import register
from ._source import find_source, load_source_trunk, source_noise
from .base import Method, Strict


class PretrainedSettings(Strict):
    source: str = Field("", description="the finished run whose trunk is evaluated: a run folder, an MLflow run id "
                                        "or latest:<method>[?key=value]")
    runs: str = Field("runs", description="the folder holding the source run")

    @field_validator("source", "runs")
    @classmethod
    def _absolute(cls, v: str) -> str:
        return str(Path(v).resolve()) if v and Path(v).exists() else v


@register
class Pretrained(Method):
    """The source run's trunk, unchanged; the run's evaluation is its only work."""

    name = "pretrained"
    Settings = PretrainedSettings
    trains = False

    @classmethod
    def check(cls, settings, info):
        find_source(settings.source, settings.runs, cls.name)

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        self.source = find_source(settings.source, settings.runs, self.name)
        try:
            self.trunk.load_state_dict(load_source_trunk(self.source).state_dict())
        except RuntimeError as e:
            raise UserError(f"pretrained: the trunk of {self.source.run_dir} does not fit this run's trunk (give the "
                            f"source's trunk.* settings): {str(e).splitlines()[0]}") from None

    def describe(self):
        return {"source_method": self.source.method, **source_noise(self.source)}

    def run_tags(self):
        return {PARENT_TAG: self.source.mlflow_run_id,
                SOURCE_RUN_TAG: str(self.source.run_dir.path.resolve())}

    def forward(self, views, y, idx):
        raise RuntimeError("a pretrained trunk is evaluated, not trained")
