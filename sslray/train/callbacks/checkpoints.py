"""The epoch's checkpoint (every rank): written before its metrics go to MLflow, with them inside,
so a process restarted from it sends them if MLflow lacks them (exactly-once epoch logging)."""

from __future__ import annotations

from . import Callback


class Checkpoint(Callback):
    """Adds the run's config, MLflow run and the epoch's logged metrics to the epoch state and hands
    it to the checkpoint sink (:mod:`sslray.train.checkpoint`)."""

    def __init__(self, sink, config: dict, run_id: str, is_main: bool):
        self.sink, self.config, self.run_id, self.is_main = sink, config, run_id, is_main

    def on_epoch(self, epoch, logs, state):
        state.update(config=self.config, mlflow_run_id=self.run_id, metrics=logs)
        self.sink.save(state, {**logs, "epoch": epoch + 1}, self.is_main)
