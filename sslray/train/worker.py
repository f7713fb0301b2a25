"""The body of every training process: the local in-process run and each rank of a Ray Train
worker group run exactly this function, so a laptop run, a Tune trial and a multi-node job share
one code path. Only where checkpoints go differs (:class:`LocalCheckpoints` / :class:`RayCheckpoints`).

Exactly-once epoch logging: every epoch's metrics are written into its checkpoint *before* rank 0
sends them to MLflow; a process restarted from that checkpoint sends them if MLflow lacks them.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from pathlib import Path

import torch

from ..config import RunConfig
from ..tracking import Tracker
from .checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from .loop import dist_context, fit


class LocalCheckpoints:
    """Checkpoints in the run folder: ``<run_dir>/checkpoint.pt``."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CHECKPOINT

    def latest(self) -> dict | None:
        return load_checkpoint(self.path) if self.path.exists() else None

    def save(self, state: dict, metrics: dict, is_main: bool) -> None:
        if is_main:
            save_checkpoint(self.path, state)


class RayCheckpoints:
    """Checkpoints reported to Ray Train (kept under its ``storage_path``), restored on restart.

    Rank 0 also mirrors each checkpoint into the run folder before reporting it: a worker killed
    right after ``ray.train.report`` can lose that report (the controller had not collected it
    yet), and the restart then takes whichever of the two checkpoints is newer.
    """

    def __init__(self, run_dir: Path):
        self.mirror = LocalCheckpoints(run_dir)

    def latest(self) -> dict | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        reported = None
        if ckpt is not None:
            with ckpt.as_directory() as d:
                reported = load_checkpoint(Path(d) / CHECKPOINT)
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
            save_checkpoint(Path(d) / CHECKPOINT, state)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"checkpoint_epoch={epoch:04d}")


def log_pending(tracker: Tracker, start: dict) -> None:
    """Send the last checkpointed epoch's metrics to MLflow if the crash came before they got there."""
    pending = start.get("metrics") or {}
    if not pending:
        return
    step = int(start["epoch"]) - 1
    if not tracker.has_step(next(iter(pending)), step):
        tracker.log_metrics(pending, step=step)


class StepRecorder:
    """``debug.record_steps``: per rank and step, the batch indices, loss and a weight checksum."""

    def __init__(self, run_dir: Path, rank: int):
        path = Path(run_dir) / "debug" / f"rank{rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a")
        self.node = ""
        try:
            import ray

            if ray.is_initialized():
                self.node = ray.get_runtime_context().get_node_id()
        except ImportError:  # pragma: no cover
            pass

    def __call__(self, epoch: int, step: int, idx: torch.Tensor, loss: float, model: torch.nn.Module) -> None:
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        self.file.write(json.dumps({"epoch": epoch, "step": step, "idx": idx.tolist(), "loss": loss,
                                    "weights": checksum, "node": self.node}) + "\n")
        self.file.flush()


class Monitor:
    """Per-epoch kNN top-1 on pooled res5 features of a small fixed subset: cheap, and comparable
    across methods (unlike their losses), so early stopping can rank trials of different methods."""

    def __init__(self, prepared, cfg: RunConfig):
        self.train = prepared.train.limit(cfg.eval.monitor_size)
        self.test = prepared.test.limit(max(10, cfg.eval.monitor_size // 2))
        self.k, self.t = cfg.eval.knn_k, cfg.eval.knn_temperature

    def __call__(self, trunk) -> float:
        from ..eval.features import extract_features
        from ..eval.probes import knn_top1

        tr = extract_features(trunk, self.train.images, ["res5"], 1)["res5"]
        te = extract_features(trunk, self.test.images, ["res5"], 1)["res5"]
        return knn_top1(tr, self.train.labels, te, self.test.labels, self.train.num_classes, self.k, self.t)


def _kill_hook(cfg: RunConfig, run_dir: Path, rank: int):
    """``debug.kill_at=[epoch, step]``: rank 0 kills its own process there, once (fault tests)."""
    if not cfg.debug.kill_at or rank != 0:
        return None
    marker = Path(run_dir) / "debug" / "killed"
    epoch_at, step_at = cfg.debug.kill_at

    def hook(epoch: int, step: int, *_):
        if (epoch, step) == (epoch_at, step_at) and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def train_worker(payload: dict, prepared=None) -> dict:
    """Train (and on rank 0 evaluate) one run. ``payload``: config, run_id, run_dir, tracking_uri.

    ``prepared`` (a :class:`~sslray.train.run.Prepared`) skips reloading data in the local case.
    """
    from .run import evaluate_run, prepare

    cfg = RunConfig(**payload["config"])
    ctx = dist_context()
    if payload.get("ray"):
        torch.set_num_threads(max(1, int(cfg.dist.cpus_per_worker)))
    prepared = prepared or prepare(cfg)
    run_dir = Path(payload["run_dir"])
    sink = RayCheckpoints(run_dir) if payload.get("ray") else LocalCheckpoints(run_dir)
    start = sink.latest()
    tracker = Tracker(cfg.experiment, run_id=payload["run_id"], uri=payload["tracking_uri"]) if ctx.is_main else None
    if start and tracker:
        log_pending(tracker, start)
    progress = payload.get("progress", True)
    method = prepared.method

    monitor = Monitor(prepared, cfg) if cfg.eval.monitor and ctx.is_main else None

    def on_epoch(epoch: int, metrics: dict, state: dict) -> None:
        logged = {f"train/{k}": v for k, v in metrics.items()}
        if monitor:
            logged["monitor/knn_top1"] = monitor(method.trunk)
        state.update(config=cfg.model_dump(), mlflow_run_id=payload["run_id"], metrics=logged)
        sink.save(state, {**logged, "epoch": epoch + 1}, ctx.is_main)  # first the checkpoint,
        if tracker:  # then MLflow (a crash between is repaired by log_pending), at most once per epoch
            if not tracker.has_step(next(iter(logged)), epoch):  # an epoch re-run after a lost checkpoint
                tracker.log_metrics(logged, step=epoch)
            # a sweep trial run in-process reports every epoch but the last to Tune: the last
            # report comes after the per-layer evaluation, with the objective
            if payload.get("tune") and not payload.get("ray") and epoch + 1 < cfg.epochs:
                import ray.tune

                ray.tune.report({**logged, "epoch": epoch + 1})
            if progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {metrics['loss']:.4f}  "
                      f"acc {100 * metrics.get('acc', float('nan')):.1f}%  {metrics['img_per_s']:.0f} img/s", flush=True)

    hooks = [h for h in (_kill_hook(cfg, run_dir, ctx.rank),
                         StepRecorder(run_dir, ctx.rank) if cfg.debug.record_steps else None) if h]
    if method.trains and cfg.epochs > 0:
        fit(cfg, method, prepared.train.images, prepared.train.labels, ctx=ctx, start=start,
            on_epoch=on_epoch, on_step=hooks, progress=progress)
    metrics: dict = {}
    if ctx.is_main:
        method.to(ctx.device)
        torch.save({k: v.cpu() for k, v in method.trunk.state_dict().items()}, run_dir / "trunk.pt")
        if cfg.eval.enabled:
            metrics = evaluate_run(prepared, run_dir, tracker, progress)
    return metrics
