"""MLflow logging of every epoch (rank 0), after its checkpoint."""

from __future__ import annotations

from ...tracking.tags import DATA_CORRUPT_TAG
from . import Callback


class MlflowLogger(Callback):
    """The epoch's metrics, at most once per step (an epoch re-run after a lost checkpoint is not
    logged twice), and the first unreadable images the source replaced, as a tag."""

    def __init__(self, tracker):
        self.tracker = tracker

    def on_epoch(self, epoch, logs, state):
        if state.get("corrupt"):
            self.tracker.set_tags({DATA_CORRUPT_TAG: "; ".join(state["corrupt"])[:5000]})
        if not self.tracker.has_step(next(iter(logs)), epoch):
            self.tracker.log_metrics(logs, step=epoch)
