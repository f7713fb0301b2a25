"""``sslray sweep``: Ray Tune + Optuna (TPE, seeded) + ASHA over a study, every trial an MLflow child run.

One parent MLflow run per study (question, search space, budget) and one child per trial (its
parameters, per-epoch metrics, per-layer transfer, stop reason), linked with ``mlflow.parentRunId``
and tagged ``sslray.study`` so MLflow's compare view lines the trials up. Each trial trains through
the same path as ``sslray train`` (in-process for one worker, Ray Train for more) and resumes from
its own checkpoint; ``--resume`` restores the Tune experiment and finishes only the missing trials.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from ..errors import UserError
from ..tracking import Tracker, client, experiment_id, tracking_uri
from .study import Study, applies, param_name, trial_overrides

OBJECTIVE = "objective"


def study_dir(study: Study, output_dir: str) -> Path:
    return (Path(output_dir) / "sweeps" / study.name).resolve()


class FinalMetricOptunaSearch(OptunaSearch):
    """OptunaSearch whose objective arrives only with a trial's last result (after the per-layer
    evaluation). Per-epoch results carry ASHA's proxy metric only, and a trial ASHA stops never
    gets the objective, so Optuna records it as PRUNED, not as a complete low-budget trial."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.metric in result:
            super().on_trial_result(trial_id, result)


class DefineByRun:
    """The study's space as an Optuna define-by-run function (conditional parameters included);
    a class, not a closure, so that Tune can pickle the searcher for ``--resume``."""

    def __init__(self, study: Study):
        self.study_json = study.model_dump_json()

    def __call__(self, trial):
        study = Study.model_validate_json(self.study_json)
        methods = study.methods
        sampled: dict[str, Any] = {}
        sampled["method"] = trial.suggest_categorical("method", methods) if len(methods) > 1 else methods[0]
        for name, dist in study.space.params.items():
            if applies(dist, sampled):
                sampled[name] = dist.suggest(trial, name)
        return {"method": methods[0]} if len(methods) == 1 else None


def grid_points(study: Study) -> list[dict]:
    """Every point of the full grid, conditional parameters included only where they apply."""
    points: list[dict] = [{"method": m} for m in study.methods]
    for name, dist in study.space.params.items():
        points = [{**p, name: v} for p in points for v in (dist.grid_points() if applies(dist, p) else [None])]
    return [{k: v for k, v in p.items() if v is not None} for p in points]


def grid_space(study: Study) -> dict:
    from ray import tune

    return {"point": tune.grid_search(grid_points(study))}


def trial_fn(config: dict, study_json: str, parent_id: str, uri: str, root: str) -> None:
    """One Tune trial: one sslray run, a child of the study's parent run."""
    import ray.tune

    from ..config import build_config
    from ..train.run import mlflow_run_id, prepare, run

    study = Study.model_validate_json(study_json)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    trial_id = ray.tune.get_context().get_trial_id()
    sampled = dict(config.get("point", config))  # grid search: one enumerated point
    method = sampled.pop("method")
    overrides = trial_overrides(study, sampled)
    b = study.budget
    overrides.update({"experiment": study.name, "output_dir": str(Path(root) / "trials"), "run_name": f"trial-{trial_id}",
                      "dist.workers": b.workers_per_trial, "dist.cpus_per_worker": b.cpus_per_trial,
                      "dist.gpus_per_worker": b.gpus_per_trial, "threads": max(1, int(b.cpus_per_trial))})
    cfg = build_config(method, overrides)
    prepared = prepare(cfg)
    run_dir = Path(root) / "trials" / trial_id
    resume = run_dir if (run_dir / "run.json").exists() else None
    tags = {"mlflow.parentRunId": parent_id, "sslray.study": study.name, "sslray.trial_id": trial_id,
            "sslray.role": "trial", "sslray.stop_reason": "running"}
    try:
        result = run(prepared, resume_from=resume, progress=False, run_dir=run_dir, tags=tags, tune=True)
    except Exception as e:  # a diverged or broken trial: say why on its MLflow run, then let Tune see it
        if (run_dir / "run.json").exists():
            client(uri).set_tag(mlflow_run_id(run_dir), "sslray.stop_reason",
                                f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:250])
        raise
    final = client(uri).get_run(result["run_id"]).data.metrics
    objective = final.get(study.objective.metric)
    report = {k: v for k, v in final.items() if "/" in k}
    report.update(epoch=b.epochs, run_id=result["run_id"])
    if objective is not None and math.isfinite(objective):
        report[OBJECTIVE] = objective
    client(uri).set_tag(result["run_id"], "sslray.stop_reason", "completed")
    ray.tune.report(report)


def _parent_run(study: Study, resume: bool) -> str:
    c = client()
    exp = experiment_id(c, study.name)
    if resume:
        found = c.search_runs([exp], filter_string=f"tags.`sslray.role` = 'study' and tags.`sslray.study` = '{study.name}'",
                              order_by=["start_time DESC"], max_results=1)
        if found:
            c.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
    parent = Tracker(study.name, run_name=f"study-{study.name}",
                     tags={"sslray.role": "study", "sslray.study": study.name, "sslray.question": study.question})
    space = {k: v.model_dump(exclude_none=True) for k, v in study.space.params.items()}
    parent.log_params({"question": study.question[:5000], "methods": ",".join(study.methods),
                       "search": study.search, "search_space": json.dumps(space)[:5000],
                       "objective": f"{study.objective.mode} {study.objective.metric}",
                       "early_stopping": study.early_stopping.model_dump_json() if study.early_stopping else "none",
                       **{f"budget.{k}": v for k, v in study.budget.model_dump().items()},
                       **{f"data.{k}": v for k, v in study.data.items()},
                       **{f"config.{k}": v for k, v in study.config.items()},
                       "report.x": study.report.x or "None", "report.families": ",".join(study.report.families)})
    return parent.run_id


def concurrency(study: Study) -> int:
    """How many trials fit the cluster at once; a trial that cannot fit at all is a UserError."""
    from ..train.launch import cluster_fit

    b = study.budget
    n, short = cluster_fit(b.workers_per_trial, b.cpus_per_trial, b.gpus_per_trial)
    if short:
        kind, need, have, _ = short
        per = b.gpus_per_trial if kind == "GPU" else b.cpus_per_trial
        raise UserError(f"study {study.name}: budget needs {need:g} {kind}s per trial "
                        f"({b.workers_per_trial} workers x {per:g}); the cluster has {have:g}")
    return max(1, min(n, b.max_concurrent or n, b.trials))


def sweep(study: Study, address: str | None = None, resume: bool = False, output_dir: str = "runs") -> dict:
    """Run a study; returns ``{"parent_run_id", "trials", "best"}``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from ..train.launch import connect

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # per-epoch results lack the objective
    # an interrupted sweep (Ctrl-C, SIGINT to the driver) stops its trials; a trial actor that does
    # not stop on request is killed after this many seconds (Tune's default: 600). Trials
    # checkpoint every epoch and --resume continues them, so 30 s is all the grace they need.
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "30")
    root = study_dir(study, output_dir)
    storage = root / "tune"
    if resume and not tune.Tuner.can_restore(str(storage / study.name)):
        raise UserError(f"cannot resume study {study.name}: no sweep state in {storage / study.name}")
    connect(address)
    n_conc = concurrency(study)
    b = study.budget
    parent_id = _parent_run(study, resume)
    root.mkdir(parents=True, exist_ok=True)
    trainable = tune.with_parameters(trial_fn, study_json=study.model_dump_json(), parent_id=parent_id,
                                     uri=tracking_uri(), root=str(root))
    resources = {"CPU": b.cpus_per_trial, "GPU": b.gpus_per_trial} if b.workers_per_trial == 1 else {"CPU": 0}
    trainable = tune.with_resources(trainable, resources)
    results = None
    try:
        if resume:
            tuner = tune.Tuner.restore(str(storage / study.name), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            es = study.early_stopping
            # rungs lie below max_t = the last epoch, whose report is the final one (after the
            # per-layer evaluation), so a trial that survives every rung is always evaluated
            scheduler = (ASHAScheduler(time_attr="epoch", metric=es.metric, mode=es.mode, max_t=b.epochs,
                                       grace_period=min(es.grace_epochs, b.epochs), reduction_factor=es.reduction_factor)
                         if es and study.search == "tpe" else FIFOScheduler())
            if study.search == "grid":
                param_space, search_alg, samples = grid_space(study), None, 1
            else:
                searcher = FinalMetricOptunaSearch(DefineByRun(study), metric=OBJECTIVE, mode=study.objective.mode,
                                             seed=study.seed, study_name=study.name)
                param_space, search_alg, samples = None, ConcurrencyLimiter(searcher, max_concurrent=n_conc), b.trials
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                # reuse_actors: a trial process keeps its imports (torch, MLflow, Tune: ~7 s here)
                tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=samples,
                                            max_concurrent_trials=n_conc, reuse_actors=True),
                run_config=tune.RunConfig(name=study.name, storage_path=str(storage), verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=0)))
        results = tuner.fit()
    finally:
        summary = finalize(study, parent_id)
    return {"parent_run_id": parent_id, **summary, "errors": results.num_errors if results is not None else None}


def finalize(study: Study, parent_id: str) -> dict:
    """Give every child run its stop reason and status; return the best completed trial."""
    c = client()
    exp = experiment_id(c, study.name)
    children = c.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=5000)
    best, sign = None, 1 if study.objective.mode == "max" else -1
    for r in children:
        reason = r.data.tags.get("sslray.stop_reason", "")
        if reason in ("running", "") and r.info.status == "FAILED":
            reason = "failed"
            c.set_tag(r.info.run_id, "sslray.stop_reason", reason)
        elif reason in ("running", ""):  # stopped by ASHA (or the driver died) before its evaluation
            history = c.get_metric_history(r.info.run_id, "train/loss")
            epochs = max((m.step + 1 for m in history), default=0)
            reason = (f"early-stopped by ASHA after epoch {epochs}" if study.early_stopping and study.search == "tpe"
                      else f"stopped after epoch {epochs} (the sweep was interrupted)")
            c.set_tag(r.info.run_id, "sslray.stop_reason", reason)
            if r.info.status in ("RUNNING", "FINISHED"):
                c.set_terminated(r.info.run_id, "KILLED")
        value = r.data.metrics.get(study.objective.metric)
        if reason == "completed" and value is not None and (best is None or sign * value > sign * best[1]):
            best = (r, value)
    c.set_terminated(parent_id, "FINISHED")
    out = {"trials": len(children), "best": None}
    if best:
        r, value = best
        out["best"] = {"run_id": r.info.run_id, study.objective.metric: value, "method": r.data.params.get("method"),
                       "params": {k: r.data.params.get(k) for k in swept_param_names(study)}}
        c.set_tag(parent_id, "sslray.best_run", r.info.run_id)
        c.log_metric(parent_id, f"best/{study.objective.metric}", value)
    return out


def swept_param_names(study: Study) -> list[str]:
    """The MLflow param names of the swept keys (method settings are logged as ``settings.<key>``)."""
    return ["method"] + [param_name(k) for k in study.space.params]
