"""Debugging hooks on every step: ``debug.record_steps`` and ``debug.kill_at`` (fault tests)."""

from __future__ import annotations

import json
import os
import signal

from . import Callback


class StepRecorder(Callback):
    """``debug.record_steps``: per rank and step, the batch indices, loss and a weight checksum."""

    def __init__(self, run_dir, rank: int):
        path = run_dir.debug / f"rank{rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")
        self.node = ""
        try:
            import ray

            if ray.is_initialized():
                self.node = ray.get_runtime_context().get_node_id()
        except ImportError:  # pragma: no cover
            pass

    def on_step(self, epoch, step, idx, loss, model):
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        self.file.write(json.dumps({"epoch": epoch, "step": step, "idx": idx.tolist(), "loss": float(loss),
                                    "weights": checksum, "node": self.node}) + "\n")
        self.file.flush()


class KillAt(Callback):
    """``debug.kill_at=[epoch, step]``: the process kills itself there, once (a marker file in the
    run's debug folder says it did)."""

    def __init__(self, run_dir, at):
        self.marker, self.at = run_dir.debug / "killed", tuple(at)

    def on_step(self, epoch, step, idx, loss, model):
        if (epoch, step) == self.at and not self.marker.exists():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
