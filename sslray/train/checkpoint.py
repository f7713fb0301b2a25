"""Where a training process's epoch state goes, and where a restart finds it.

Two sinks with one interface (``latest()``, ``save(state, metrics, is_main)``): the run folder
(:class:`LocalCheckpoints`, an in-process run) and Ray Train (:class:`RayCheckpoints`, a worker of a
Ray Train group). The state holds the RNG too (:func:`rng_state`), so a resumed run continues as if
it had never stopped.
"""

from __future__ import annotations

import tempfile

import torch

from ..tracking import RunDir


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LocalCheckpoints:
    """Checkpoints in the run folder (``checkpoint.pt``)."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir

    def latest(self) -> dict | None:
        return self.run_dir.load_checkpoint() if self.run_dir.has(RunDir.CHECKPOINT) else None

    def save(self, state: dict, metrics: dict, is_main: bool) -> None:
        if is_main:
            self.run_dir.save_checkpoint(state)


class RayCheckpoints:
    """Checkpoints reported to Ray Train (kept under its ``storage_path``), restored on restart.

    Rank 0 also mirrors each checkpoint into the run folder before reporting it: a worker killed
    right after ``ray.train.report`` can lose that report (the controller had not collected it
    yet), and the restart then takes whichever of the two checkpoints is newer.
    """

    def __init__(self, run_dir: RunDir):
        self.mirror = LocalCheckpoints(run_dir)

    def latest(self) -> dict | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        reported = None
        if ckpt is not None:
            with ckpt.as_directory() as d:
                reported = RunDir(d).load_checkpoint()
        mirrored = self.mirror.latest()
        candidates = [c for c in (reported, mirrored) if c is not None]
        return max(candidates, key=lambda c: int(c["epoch"])) if candidates else None

    def save(self, state: dict, metrics: dict, is_main: bool) -> None:
        import ray.train

        epoch = int(state["epoch"])
        if not is_main:  # every rank reports; only rank 0 carries the checkpoint
            ray.train.report(metrics)
            return
        self.mirror.save(state, metrics, is_main)
        with tempfile.TemporaryDirectory() as d:
            RunDir(d).save_checkpoint(state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"checkpoint_epoch={epoch:04d}")
