"""Training-time work as callbacks on the shared loop (:func:`sslray.train.loop.fit`).

A callback is a small object with three hooks, each a no-op unless overridden:

- ``on_step(epoch, step, idx, loss, model)`` after every optimiser step (``loss`` a 0-dim tensor
  on the device: reading it waits for the step; ``idx`` the batch's global indices on the host);
- ``on_epoch(epoch, logs, state)`` after every epoch, in list order: ``logs`` is the epoch's
  metrics as logged (``train/<name>``, ``time/<share>``), which a callback may add to for those
  after it; ``state`` is the epoch's checkpoint (model, optimiser, schedule, RNG, epoch);
- ``on_end()`` once the loop has trained its last epoch.

:func:`sslray.train.worker.train_worker` composes a run's callbacks; each module here holds one
kind of work: the kNN monitor (:mod:`.monitor`), representation health and the collapse rule
(:mod:`.health`), trunk snapshots (:mod:`.snapshots`), checkpoints (:mod:`.checkpoints`), MLflow
(:mod:`.tracking`), the Tune reporter and the console (:mod:`.report`), timing (:mod:`.timing`) and
the debugging hooks (:mod:`.debug`).
"""

from __future__ import annotations


class Callback:
    """One kind of training-time work; override the hooks it needs."""

    def on_step(self, epoch: int, step: int, idx, loss, model) -> None:
        """After every optimiser step."""

    def on_epoch(self, epoch: int, logs: dict, state: dict) -> None:
        """After every epoch, with its metrics as logged (add to them for the callbacks after this one)."""

    def on_end(self) -> None:
        """After the last epoch."""


def steps_hooked(callbacks) -> list[Callback]:
    """The callbacks that override :meth:`Callback.on_step` (the loop calls only those every step)."""
    return [c for c in callbacks if type(c).on_step is not Callback.on_step]


class LastEpoch(Callback):
    """Keeps the last epoch's logged metrics (at first: those of the checkpoint the run resumes)."""

    def __init__(self, start: dict | None = None):
        self.logs: dict = dict((start or {}).get("metrics") or {})

    def on_epoch(self, epoch, logs, state):
        self.logs = dict(logs)


__all__ = ["Callback", "LastEpoch", "steps_hooked"]
