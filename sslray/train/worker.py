"""The body of every training process: the local in-process run and each rank of a Ray Train
worker group run exactly :func:`train_worker`, so a laptop run, a Tune trial and a multi-node job
share one code path. What differs is passed in, not flagged: where epoch state goes (a checkpoint
sink, :mod:`sslray.train.checkpoint`) and who else hears of each epoch (a reporter, e.g. Tune's).

Exactly-once epoch logging: every epoch's metrics are written into its checkpoint *before* rank 0
sends them to MLflow; a process restarted from that checkpoint sends them if MLflow lacks them.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, replace
from typing import Any, Protocol

import torch

from ..components.distributed import dist_context
from ..config import RunConfig
from ..eval.health import Collapsed, collapse
from ..eval.monitor import HealthMonitor, KnnMonitor
from ..tracking import RunDir, Tracker
from ..tracking.tags import COLLAPSED_TAG
from .build import Built, build_run
from .checkpoint import LocalCheckpoints, RayCheckpoints
from .loop import fit
from .record import evaluate_and_record, evaluate_over_epochs, record_afterwards


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a training process needs, from the driver that owns the run."""

    config: dict  # RunConfig.model_dump()
    run_id: str  # the MLflow run
    run_dir: str  # the run folder (absolute)
    tracking_uri: str
    progress: bool = True
    #: the built method's state (a Ray object ref on a Ray Train worker group), so workers skip setup
    init_state: Any = None
    #: the driver's data sources when workers should not open the data again (a ref), else None
    sources: Any = None

    def shipped(self, init_state: Any, sources: Any) -> "WorkerSpec":
        return replace(self, init_state=init_state, sources=sources)


class EpochReporter(Protocol):
    """Someone else to tell about each epoch (rank 0 only), e.g. Ray Tune in a sweep trial."""

    def epoch(self, epoch: int, metrics: dict, last: bool) -> None: ...

    def ray_callbacks(self) -> list:
        """Ray Train callbacks that carry the same reports when the run trains on Ray Train."""
        ...


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

    def __init__(self, run_dir: RunDir, rank: int):
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

    def __call__(self, epoch: int, step: int, idx: torch.Tensor, loss: torch.Tensor, model: torch.nn.Module) -> None:
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        self.file.write(json.dumps({"epoch": epoch, "step": step, "idx": idx.tolist(), "loss": float(loss),
                                    "weights": checksum, "node": self.node}) + "\n")
        self.file.flush()


def _kill_hook(cfg: RunConfig, run_dir: RunDir, rank: int):
    """``debug.kill_at=[epoch, step]``: rank 0 kills its own process there, once (fault tests)."""
    if not cfg.debug.kill_at or rank != 0:
        return None
    marker = run_dir.debug / "killed"
    epoch_at, step_at = cfg.debug.kill_at

    def hook(epoch: int, step: int, *_):
        if (epoch, step) == (epoch_at, step_at) and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def train_worker(spec: WorkerSpec, built: Built | None, checkpoints, reporter: EpochReporter | None = None) -> dict:
    """Train (and on rank 0 evaluate) one run; returns rank 0's last epoch metrics and evaluation.

    ``built`` is the driver's own run (in-process); a Ray Train worker passes None and builds its
    data from the config, its method from ``spec.init_state``."""
    cfg = RunConfig(**spec.config)
    ctx = dist_context()
    built = built or build_run(cfg, spec.init_state, spec.sources)
    run_dir = RunDir(spec.run_dir)
    start = checkpoints.latest()
    tracker = Tracker(cfg.experiment, run_id=spec.run_id, uri=spec.tracking_uri) if ctx.is_main else None
    if start and tracker:
        log_pending(tracker, start)
    method = built.method
    monitor = KnnMonitor(*built.eval_sources(), cfg.eval) if cfg.eval.monitor and ctx.is_main else None
    # health needs two images at least (uniformity is over pairs); a one-image training set has none
    health = HealthMonitor(built.train, cfg.eval) if (cfg.eval.health and ctx.is_main and method.trains
                                                      and len(built.train) >= 2) else None
    embed_dim = next((getattr(method.settings, k) for k in ("embed_dim", "proj_dim") if hasattr(method.settings, k)),
                     None)
    last: dict = dict((start or {}).get("metrics") or {})
    said = {"collapse": False}

    def on_epoch(epoch: int, metrics: dict, state: dict) -> None:
        logged = {k if k.startswith("time/") else f"train/{k}": v for k, v in metrics.items()}
        stop_why = None
        if monitor:
            logged["monitor/knn_top1"] = monitor(method.trunk)
        if health:
            logged.update(health(method.trunk))
            why = collapse(logged, embed_dim, cfg.eval.collapse_rank, cfg.eval.collapse_std)
            if why and not said["collapse"]:  # once per run: one line and a tag
                said["collapse"] = True
                print(f"collapse: {cfg.method} at epoch {epoch + 1}: {why}", flush=True)
                tracker.set_tags({COLLAPSED_TAG: f"epoch {epoch + 1}: {why}"})
            stop_why = why if cfg.eval.stop_on_collapse else None
        if ctx.is_main and epoch + 1 in cfg.eval.at_epochs:  # before the checkpoint: a resume never misses it
            run_dir.save_trunk_at(epoch + 1, method.trunk.state_dict())
        state.update(config=cfg.model_dump(), mlflow_run_id=spec.run_id, metrics=logged)
        if tracker and state.get("corrupt"):
            tracker.set_tags({"sslray.data.corrupt_first": "; ".join(state["corrupt"])[:5000]})
        checkpoints.save(state, {**logged, "epoch": epoch + 1}, ctx.is_main)  # first the checkpoint,
        last.clear()
        last.update(logged)
        if tracker:  # then MLflow (a crash between is repaired by log_pending), at most once per epoch
            if not tracker.has_step(next(iter(logged)), epoch):  # an epoch re-run after a lost checkpoint
                tracker.log_metrics(logged, step=epoch)
            if reporter:
                reporter.epoch(epoch, logged, last=epoch + 1 == cfg.epochs)
            if spec.progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {metrics['loss']:.4f}  "
                      f"acc {100 * metrics.get('acc', float('nan')):.1f}%  {metrics['img_per_s']:.0f} img/s", flush=True)
        if stop_why:  # logged first, so the collapse shows in MLflow; then the run ends
            raise Collapsed(f"{cfg.method} collapsed at epoch {epoch + 1}: {stop_why}", epoch + 1, stop_why)

    hooks = [h for h in (_kill_hook(cfg, run_dir, ctx.rank),
                         StepRecorder(run_dir, ctx.rank) if cfg.debug.record_steps else None) if h]
    if method.trains and cfg.epochs > 0:
        fit(cfg, method, built.train, ctx=ctx, start=start,
            on_epoch=on_epoch, on_step=hooks, progress=spec.progress)
    if not ctx.is_main:
        return {}
    if spec.progress and "time/data_wait" in last:  # where the last epoch's time went: data or compute?
        print(f"time: data wait {100 * last['time/data_wait']:.1f}%, host to device "
              f"{100 * last['time/host_to_device']:.1f}%, decode on device {100 * last['time/decode']:.1f}%, steps "
              f"{100 * last['time/step']:.1f}%; "
              f"{last['train/img_per_s']:.0f} img/s ({last['train/img_per_s_worker']:.0f} per worker)", flush=True)
    method.to(ctx.device)
    run_dir.save_trunk(method.trunk.state_dict())
    if method.trains and cfg.epochs > 0:  # e.g. an energy-based model's negatives, an audio net's probe
        last.update(record_afterwards(method.after_training(built.train, built.test), cfg, run_dir, tracker,
                                      spec.progress))
    if cfg.eval.enabled:
        train, test = built.eval_sources()
        last.update(evaluate_and_record(method.trunk, train, test, cfg, run_dir, tracker, spec.progress))
        if cfg.eval.at_epochs and method.trains and cfg.epochs > 0:
            evaluate_over_epochs(method.trunk, train, test, cfg, run_dir, tracker, last, spec.progress)
    return last


def ray_train_loop(config: dict) -> None:
    """The per-worker function of a Ray Train run: ``config = {"spec": WorkerSpec}``."""
    spec: WorkerSpec = config["spec"]
    cfg = RunConfig(**spec.config)
    torch.set_num_threads(max(1, int(cfg.dist.cpus_per_worker)))
    import ray

    spec = spec.shipped(ray.get(spec.init_state), ray.get(spec.sources) if spec.sources is not None else None)
    train_worker(spec, None, RayCheckpoints(RunDir(spec.run_dir)))


__all__ = ["EpochReporter", "LocalCheckpoints", "WorkerSpec", "ray_train_loop", "train_worker"]
