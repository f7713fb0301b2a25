"""Who else hears of each epoch (rank 0): Ray Tune's reporter in a sweep trial, and the console."""

from __future__ import annotations

import math

from . import Callback


class ReporterCallback(Callback):
    """Tells an :class:`~sslray.train.worker.EpochReporter` (e.g. Tune's) of every epoch."""

    def __init__(self, reporter, epochs: int):
        self.reporter, self.epochs = reporter, epochs

    def on_epoch(self, epoch, logs, state):
        self.reporter.epoch(epoch, logs, last=epoch + 1 == self.epochs)


class EpochLine(Callback):
    """One console line per epoch: loss, pretext accuracy (for a method that has one; BYOL, VICReg
    and the like have none, and their line says nothing of it) and throughput."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch(self, epoch, logs, state):
        print(f"epoch {epoch + 1}/{self.epochs}  loss {logs['train/loss']:.4f}  " + epoch_acc(logs)
              + f"{logs['train/img_per_s']:.0f} img/s", flush=True)


def epoch_acc(logs: dict) -> str:
    """``"acc 93.5%  "``, or nothing for a method without a pretext accuracy (never ``acc nan%``)."""
    acc = logs.get("train/acc")
    return "" if acc is None or math.isnan(acc) else f"acc {100 * acc:.1f}%  "
