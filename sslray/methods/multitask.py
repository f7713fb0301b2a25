"""Multi-task self-supervised pretraining (Doersch & Zisserman 2017, "Multi-task self-supervised
visual learning"): several pretext tasks train one shared trunk, each with its own head.

Every sub-method is built from the registry around the *same* trunk object, with its default
settings or those given in ``task_settings``. Each batch is drawn for one task with the mix's
probabilities (the paper's asynchronous per-task batches), so a step is exactly that task's step
and its loss and metrics are logged as ``<task>/loss``, ``<task>/acc``; the shared loop averages
each key over the batches that reported it. The draw depends only on ``(seed, step)``, so every
worker of a distributed run picks the same task, and the step count checkpoints with the model.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field, ValidationError, field_validator
from torch import nn

from ..config import Seed, unbounded, validation_message
from ..errors import UserError
from . import discover, register
from ._ddp import every_parameter
from .base import Method, Strict


class MultitaskSettings(Strict):
    tasks: dict[str, Annotated[float, Field(ge=0, json_schema_extra=unbounded(
        "renormalised: only the ratios of the probabilities matter"))]] = Field({"rotation": 0.5, "jigsaw": 0.5},
                                    description="task -> probability that a batch is drawn for it (renormalised)")
    task_settings: dict[str, dict[str, Any]] = Field({}, description="task -> its own settings "
                                                     "(default: the paper's)")
    seed: Seed = Field(0, description="seed of the per-batch task draw")

    @field_validator("tasks")
    @classmethod
    def _mix(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(p < 0 for p in v.values()) or sum(v.values()) <= 0:
            raise ValueError("needs at least one task and non-negative probabilities with a positive sum")
        return v


def task_settings(name: str, cls: type[Method], settings: MultitaskSettings):
    try:
        return cls.Settings(**settings.task_settings.get(name, {}))
    except ValidationError as e:
        raise UserError(f"multitask: task_settings.{name}.{validation_message(e)}") from None


@register
class Multitask(Method):
    """Several pretext tasks share one trunk, a head each, one task per batch (Doersch & Zisserman 2017)."""

    name = "multitask"
    Settings = MultitaskSettings

    def __init__(self, settings, trunk, info):
        super().__init__(settings, trunk, info)
        methods = discover()
        self.pretexts = nn.ModuleDict({
            name: methods[name](task_settings(name, methods[name], settings), trunk, info) for name in settings.tasks})
        self.names = list(settings.tasks)
        # the mix's views are its tasks' views, in task order; each task's step gets its own slice
        counts = [len(m.input_views()) for m in self.pretexts.values()]
        starts = [sum(counts[:i]) for i in range(len(counts))]
        self.slices = {n: slice(a, a + c) for n, a, c in zip(self.names, starts, counts)}
        self.probs = torch.tensor([settings.tasks[n] for n in self.names], dtype=torch.float64)  # on the CPU
        self.step, self.last = 0, self.names[0]

    @classmethod
    def check_config(cls, settings, info):
        methods = discover()
        for name in settings.tasks:
            if name in methods and methods[name].needs:
                raise UserError(f"multitask: {name!r} needs clips or sound of each batch, and the mix passes its "
                                f"tasks images only: train {name} on its own")

    @classmethod
    def check(cls, settings, info):
        methods = discover()
        for name in settings.tasks:
            if name == cls.name:
                raise UserError("multitask: a task mix cannot contain multitask itself")
            if name not in methods:
                raise UserError(f"multitask: unknown task {name!r} in the mix; known methods: "
                                f"{', '.join(sorted(n for n, m in methods.items() if m.trains and n != cls.name))}")
            if not methods[name].trains:
                raise UserError(f"multitask: {name!r} is not trained, so it cannot be a task of the mix")
        for name in settings.task_settings:
            if name not in settings.tasks:
                raise UserError(f"multitask: task_settings names {name!r}, which is not in the mix")
        for name in settings.tasks:  # each task's own checks, as a run of it alone would make them
            own = task_settings(name, methods[name], settings)
            methods[name].check_config(own, info)
            methods[name].check(own, info)

    def draw(self) -> str:
        """The task of the current step: a function of ``(seed, step)`` only, the same on every worker."""
        g = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + self.step)
        return self.names[int(torch.multinomial(self.probs, 1, generator=g))]

    @classmethod
    def views(cls, settings, image_size):
        methods = discover()
        return tuple(v for name in settings.tasks
                     for v in methods[name].views(task_settings(name, methods[name], settings), image_size))

    def forward(self, views, y, idx):
        self.last = task = self.draw()
        self.step += 1
        out = self.pretexts[task](views[self.slices[task]], y, idx)
        return {"loss": every_parameter(out["loss"], self), **{f"{task}/{k}": v for k, v in out.items()}}

    def setup(self, train):
        for m in self.pretexts.values():
            m.setup(train)

    def after_step(self):
        self.pretexts[self.last].after_step()

    def describe(self):
        return {f"{n}.{k}": v for n, m in self.pretexts.items() for k, v in m.describe().items()}

    def run_tags(self):
        return {k: v for m in self.pretexts.values() for k, v in m.run_tags().items()}

    def get_extra_state(self):
        return {"step": self.step}

    def set_extra_state(self, state):
        self.step = int(state["step"])
