"""Why a sweep trial ended: a small enum on the trial's MLflow run, written by the runner and read
by the report (structured tags, plus one human-readable tag for the MLflow UI)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..tracking.tags import STOP_EPOCH_TAG, STOP_ERROR_TAG, STOP_REASON_TAG, STOP_TAG

TAG, EPOCH_TAG, ERROR_TAG, TEXT_TAG = STOP_TAG, STOP_EPOCH_TAG, STOP_ERROR_TAG, STOP_REASON_TAG


class Stop(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    EARLY_STOPPED = "early-stopped"  # by ASHA, after ``epoch`` epochs
    FAILED = "failed"  # with ``error``
    INTERRUPTED = "interrupted"  # the sweep was stopped, after ``epoch`` epochs
    COLLAPSED = "collapsed"  # its representation collapsed at ``epoch``: stopped (``error`` says how)


@dataclass(frozen=True)
class StopReason:
    stop: Stop
    epoch: int | None = None
    error: str = ""

    def text(self) -> str:
        if self.stop is Stop.EARLY_STOPPED:
            return f"early-stopped by ASHA after epoch {self.epoch}"
        if self.stop is Stop.INTERRUPTED:
            return f"stopped after epoch {self.epoch} (the sweep was interrupted)"
        if self.stop is Stop.FAILED and self.error:
            return f"failed: {self.error}"
        if self.stop is Stop.COLLAPSED:
            return f"collapsed at epoch {self.epoch}: stopped ({self.error})" if self.error else "collapsed"
        return self.stop.value

    def label(self) -> str:
        """A few characters for a table: done, failed, ASHA@<epoch>, stopped, running."""
        if self.stop is Stop.COLLAPSED:
            return f"coll@{self.epoch}"
        return {Stop.COMPLETED: "done", Stop.FAILED: "failed", Stop.INTERRUPTED: "stopped",
                Stop.RUNNING: "running"}.get(self.stop) or f"ASHA@{self.epoch}"

    def tags(self) -> dict[str, str]:
        return {TAG: self.stop.value, EPOCH_TAG: "" if self.epoch is None else str(self.epoch),
                ERROR_TAG: self.error[:250], TEXT_TAG: self.text()[:250]}

    @classmethod
    def of(cls, tags: dict[str, str]) -> "StopReason | None":
        """The stop reason recorded in a run's tags (None if the run has none)."""
        if TAG not in tags:
            return None
        epoch = tags.get(EPOCH_TAG) or None
        return cls(Stop(tags[TAG]), int(epoch) if epoch else None, tags.get(ERROR_TAG, ""))


def failure(e: BaseException) -> StopReason:
    first = str(e).splitlines()[0] if str(e) else ""
    return StopReason(Stop.FAILED, error=f"{type(e).__name__}: {first}")
