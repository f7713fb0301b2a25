"""Trunk snapshots after chosen epochs (``eval.at_epochs``), for the evaluation over epochs."""

from __future__ import annotations

from . import Callback


class TrunkSnapshots(Callback):
    """Saves the trunk after each epoch of ``epochs`` into the run folder; placed before the
    checkpoint, so a run resumed from that checkpoint never misses one."""

    def __init__(self, trunk, run_dir, epochs):
        self.trunk, self.run_dir, self.epochs = trunk, run_dir, set(epochs)

    def on_epoch(self, epoch, logs, state):
        if epoch + 1 in self.epochs:
            self.run_dir.save_trunk_at(epoch + 1, self.trunk.state_dict())
