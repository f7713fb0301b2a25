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

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX

from ..config import group_id
from ..errors import Interrupted, UserError
from ..paths import Held, check_output, lock_file
from ..tracking import RunDir, Store, Tracker
from ..tracking.tags import (BEST_RUN_TAG, GROUP_TAG, PARENT_TAG, QUESTION_TAG, ROLE_TAG, SEED_INDEX_TAG, STUDY_TAG,
                             TRIAL_ID_TAG, baseline_run_tag, tag_is)
from .stops import Stop, StopReason, failure
from .study import STUDY_ARTIFACT, Study, applies, param_name, trial_overrides

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


SEED_INDEX = "seed_index"  # a grid's seed axis; TPE's repeats carry Repeater's TRIAL_INDEX


def seed_index(config: dict) -> int:
    return int(config.get(TRIAL_INDEX, config.get(SEED_INDEX, 0)))


def configuration(config: dict) -> str:
    """A trial's configuration without its seed: what the seeds of one configuration share."""
    return json.dumps({k: v for k, v in config.items() if k not in (TRIAL_INDEX, SEED_INDEX)},
                      sort_keys=True, default=str)


class SeedMeanRepeater(Repeater):
    """Ray Tune's Repeater (each configuration suggested ``seeds`` times, the searcher told the mean
    of their objectives), except that a configuration none of whose seeds reached the objective
    (all stopped by ASHA or failed) is reported without one, so Optuna records it as PRUNED
    instead of a NaN."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs) -> None:
        group = self._trial_id_to_group[trial_id]
        group.report(trial_id, result[self.searcher.metric] if result and self.searcher.metric in result
                     else float("nan"))
        if group.finished_reporting():
            scores = [v for v in group.scores() if not math.isnan(v)]
            self.searcher.on_trial_complete(group.primary_trial_id,
                                            result={self.searcher.metric: sum(scores) / len(scores)} if scores else None,
                                            **kwargs)


class SeedMeanASHA(ASHAScheduler):
    """ASHA that decides on a configuration, not a seed: at each rung a trial's metric is replaced
    by the mean, over the seeds of its configuration that have reached that rung, of their
    metric there. A configuration's seeds start together, so they reach a rung close in time; the
    first to arrive is judged on the seeds present then (itself at least)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._rung_values: dict[str, dict[Any, dict[str, float]]] = {}

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        t, v = result.get(self._time_attr), result.get(self._metric)
        if t is not None and v is not None:
            at = self._rung_values.setdefault(configuration(trial.config), {}).setdefault(t, {})
            at[trial.trial_id] = v
            result = {**result, self._metric: sum(at.values()) / len(at)}
        return super().on_trial_result(tune_controller, trial, result)


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

    space = {"point": tune.grid_search(grid_points(study))}
    if study.budget.seeds > 1:
        space[SEED_INDEX] = tune.grid_search(list(range(study.budget.seeds)))
    return space


class TuneReporter:
    """A sweep trial's epochs, reported to Ray Tune: in-process, every epoch but the last (the
    last report comes after the per-layer evaluation, with the objective); on Ray Train, rank 0's
    reports reach Tune through ``TuneReportCallback``."""

    def epoch(self, epoch: int, metrics: dict, last: bool) -> None:
        import ray.tune

        if not last:
            ray.tune.report({**metrics, "epoch": epoch + 1})

    def ray_callbacks(self) -> list:
        from ray.tune.integration.ray_train import TuneReportCallback

        return [TuneReportCallback()]


def trial_fn(config: dict, study_json: str, parent_id: str, uri: str, root: str) -> None:
    """One Tune trial: one sslray run, a child of the study's parent run."""
    import ray.tune

    from ..eval.health import Collapsed
    from ..train.build import build_config, build_run
    from ..train.run import run

    study = Study.model_validate_json(study_json)
    trial_id = ray.tune.get_context().get_trial_id()
    sampled = {k: v for k, v in config.get("point", config).items() if k not in (TRIAL_INDEX, SEED_INDEX)}
    method = sampled.pop("method")
    overrides = trial_overrides(study, sampled)
    b = study.budget
    overrides.update({"run.experiment": study.name, "run.output_dir": str(Path(root) / "trials"),
                      "run.run_name": f"trial-{trial_id}", "dist.workers": b.workers_per_trial,
                      "dist.cpus_per_worker": b.cpus_per_trial, "dist.gpus_per_worker": b.gpus_per_trial,
                      "run.threads": max(1, int(b.cpus_per_trial))})
    if b.data_cpus_per_trial:
        overrides["data.cpus_per_worker"] = b.data_cpus_per_trial
    cfg = build_config(method, overrides)
    if seed_index(config):  # the configuration's n-th seed: run.seed + n
        overrides["run.seed"] = cfg.seed + seed_index(config)
        cfg = build_config(method, overrides)
    built = build_run(cfg)
    run_dir = RunDir(Path(root) / "trials" / trial_id)
    resume = run_dir if run_dir.has(RunDir.META) else None
    tags = {PARENT_TAG: parent_id, STUDY_TAG: study.name, TRIAL_ID_TAG: trial_id,
            ROLE_TAG: "trial", GROUP_TAG: group_id(cfg.model_dump()),
            SEED_INDEX_TAG: str(seed_index(config)), **StopReason(Stop.RUNNING).tags()}
    store = Store(uri)
    try:
        result = run(built, resume=resume, progress=False, run_dir=run_dir, tags=tags, reporter=TuneReporter(), uri=uri)
    except Exception as e:  # a diverged or broken trial: say why on its MLflow run, then let Tune see it
        if isinstance(e, Collapsed) and run_dir.has(RunDir.META):  # stopped early, not an error
            store.set_tags(run_dir.mlflow_run_id, StopReason(Stop.COLLAPSED, getattr(e, "epoch", None),
                                                             getattr(e, "why", "")).tags())
            store.set_status(run_dir.mlflow_run_id, "KILLED")
            return  # Tune sees a trial without the objective: Optuna records it as pruned
        if run_dir.has(RunDir.META):
            store.set_tags(run_dir.mlflow_run_id, failure(e).tags())
        raise
    objective = result.metrics.get(study.objective.metric)
    report = {k: v for k, v in result.metrics.items() if "/" in k}
    report.update(epoch=b.epochs, run_id=result.run_id)
    if objective is not None and math.isfinite(objective):
        report[OBJECTIVE] = objective
    store.set_tags(result.run_id, StopReason(Stop.COMPLETED).tags())
    ray.tune.report(report)


def _parent_run(study: Study, resume: bool, store: Store) -> str:
    exp = store.experiment(study.name)
    if resume:
        found = store.runs(exp, f"{tag_is(ROLE_TAG, 'study')} and {tag_is(STUDY_TAG, study.name)}",
                           order_by=["start_time DESC"], max_results=1)
        if found:
            store.set_status(found[0].info.run_id, "RUNNING")
            return found[0].info.run_id
    parent = Tracker(study.name, run_name=f"study-{study.name}", store=store,
                     tags={ROLE_TAG: "study", STUDY_TAG: study.name, QUESTION_TAG: study.question})
    # the study whole, as an artifact (the report reads it back); params are for the UI's columns
    store.log_text(parent.run_id, study.model_dump_json(indent=1), STUDY_ARTIFACT)
    parent.log_params({"question": study.question[:5000], "methods": ",".join(study.methods),
                       "search": study.search, "swept": ",".join(study.space.params)[:5000],
                       "objective": f"{study.objective.mode} {study.objective.metric}",
                       "early_stopping": study.early_stopping.model_dump_json() if study.early_stopping else "none",
                       **{f"budget.{k}": v for k, v in study.budget.model_dump().items()},
                       **{f"data.{k}": v for k, v in study.data.items()},
                       **{f"config.{k}": v for k, v in study.config.items()},
                       "report.x": study.report.x or "None", "report.families": ",".join(study.report.families)})
    return parent.run_id


def concurrency(study: Study) -> int:
    """How many trials fit the cluster at once; a trial that cannot fit at all is a UserError."""
    from ..cluster import cluster_fit

    b = study.budget
    n, short = cluster_fit(b.workers_per_trial, b.cpus_per_trial + b.data_cpus_per_trial, b.gpus_per_trial)
    if short:
        kind, need, have, _ = short
        per = b.gpus_per_trial if kind == "GPU" else b.cpus_per_trial + b.data_cpus_per_trial
        raise UserError(f"study {study.name}: budget needs {need:g} {kind}s per trial "
                        f"({b.workers_per_trial} workers x {per:g}); the cluster has {have:g}")
    return max(1, min(n, b.max_concurrent or n, b.trials * b.seeds))


def sweep(study: Study, address: str | None = None, resume: bool = False, output_dir: str = "runs",
          uri: str | None = None) -> dict:
    """Run a study (MLflow store ``uri``, default :func:`~sslray.tracking.tracking_uri`); returns
    ``{"parent_run_id", "trials", "best", "errors"}``."""
    from ray import tune

    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")  # per-epoch results lack the objective
    # an interrupted sweep (Ctrl-C, SIGINT to the driver) stops its trials; a trial actor that does
    # not stop on request is killed after this many seconds (Tune's default: 600). Trials
    # checkpoint every epoch and --resume continues them, so 30 s is all the grace they need.
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "30")
    check_output(output_dir, "folder", what="sweep: cannot write to --output-dir")
    root = study_dir(study, output_dir)
    check_output(root, "folder", what="sweep: cannot write the study's folder")
    storage = root / "tune"
    if resume and not tune.Tuner.can_restore(str(storage / study.name)):
        raise UserError(f"cannot resume study {study.name}: no sweep state in {storage / study.name}")
    # one sweep of a study per folder at a time: a second would make a second parent run
    # (and, resumed, run the same trials twice); released when this process ends, however
    held = Held(lock_file(root, "study"), f"study {study.name} is being swept in {output_dir} by another "
                                          f"`sslray sweep`; wait for it to end, or use another --output-dir")
    try:
        return _sweep(study, address, resume, root, storage, uri)
    finally:
        held.release()


#: what the driver of a multi-worker trial holds: its TorchTrainer's workers hold the CPUs and GPUs
#: (Tune refuses a trial that asks for nothing at all)
DRIVER_CPU = 0.01


def trial_resources(b) -> dict:
    """A trial's own resources: a single-worker trial trains in its own process; a multi-worker
    trial's process only drives a worker group, which asks for the budget's CPUs and GPUs itself."""
    if b.workers_per_trial == 1:
        return {"CPU": b.cpus_per_trial, "GPU": b.gpus_per_trial}
    return {"CPU": DRIVER_CPU}


def _sweep(study: Study, address: str | None, resume: bool, root: Path, storage: Path, uri: str | None) -> dict:
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from ..cluster import connect

    connect(address)
    n_conc = concurrency(study)
    b = study.budget
    store = Store(uri)
    parent_id = _parent_run(study, resume, store)
    root.mkdir(parents=True, exist_ok=True)
    baselines = None
    if study.baselines:
        from .baselines import start_baselines

        baselines = start_baselines(study, store, root)  # they run beside the trials
    trainable = tune.with_parameters(trial_fn, study_json=study.model_dump_json(), parent_id=parent_id,
                                     uri=store.uri, root=str(root))
    trainable = tune.with_resources(trainable, trial_resources(b))
    results, status = None, "FAILED"
    try:
        if resume:
            tuner = tune.Tuner.restore(str(storage / study.name), trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            es = study.early_stopping
            # rungs lie below max_t = the last epoch, whose report is the final one (after the
            # per-layer evaluation), so a trial that survives every rung is always evaluated
            asha = SeedMeanASHA if b.seeds > 1 else ASHAScheduler
            scheduler = (asha(time_attr="epoch", metric=es.metric, mode=es.mode, max_t=b.epochs,
                              grace_period=min(es.grace_epochs, b.epochs), reduction_factor=es.reduction_factor)
                         if es and study.search == "tpe" else FIFOScheduler())
            if study.search == "grid":
                param_space, search_alg, samples = grid_space(study), None, 1
            else:
                searcher = FinalMetricOptunaSearch(DefineByRun(study), metric=OBJECTIVE, mode=study.objective.mode,
                                             seed=study.seed, study_name=study.name)
                # the seeds of a configuration are suggested together; Optuna hears their mean
                search_alg = ConcurrencyLimiter(searcher, max_concurrent=max(1, -(-n_conc // b.seeds)))
                if b.seeds > 1:
                    search_alg = SeedMeanRepeater(search_alg, repeat=b.seeds, set_index=True)
                param_space, samples = None, b.trials * b.seeds
            tuner = tune.Tuner(
                trainable, param_space=param_space,
                # reuse_actors: a trial process keeps its imports (torch, MLflow, Tune: ~7 s here)
                tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=samples,
                                            max_concurrent_trials=n_conc, reuse_actors=True),
                run_config=tune.RunConfig(name=study.name, storage_path=str(storage), verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=0)))
        results = tuner.fit()
        status = "FINISHED"
    except KeyboardInterrupt:  # a second Ctrl-C, or one before Tune took over SIGINT
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if baselines is not None:
            _record_baselines(baselines, store, parent_id, wait=status == "FINISHED")
        done = results.num_terminated + results.num_errors if results is not None else 0
        if status == "FINISHED" and done < planned_trials(study):
            status = "KILLED"  # Tune caught a Ctrl-C and stopped early, without an error
        summary = finalize(study, parent_id, store, status)
    if status == "KILLED":
        raise Interrupted(f"sweep of study {study.name} interrupted: {done} of {planned_trials(study)} trials ended, "
                          f"the rest never ran or were stopped (the study's MLflow run is marked KILLED)")
    return {"parent_run_id": parent_id, **summary, "errors": results.num_errors if results is not None else None}


def _record_baselines(baselines, store: Store, parent_id: str, wait: bool) -> None:
    """Tag the study's run with its floor and ceiling (waiting for those still running unless the
    sweep stopped early); one warning line for each that is missing."""
    from .baselines import ROLES

    found, problems = baselines.collect(wait=wait)
    store.set_tags(parent_id, {baseline_run_tag(ROLES[m]): run_id for m, run_id in found.items()})
    for p in problems:
        print(f"warning: {p}; the report will show no {p.split()[1]}", flush=True)


def planned_trials(study: Study) -> int:
    """How many trials the study runs: every grid point, or ``budget.trials`` suggestions, each seed apart."""
    b = study.budget
    return (len(grid_points(study)) if study.search == "grid" else b.trials) * b.seeds


def finalize(study: Study, parent_id: str, store: Store, status: str = "FINISHED") -> dict:
    """Give every child run its stop reason and status, and the study's run ``status``; return the
    best completed trial."""
    exp = store.experiment(study.name)
    children = store.children(exp, parent_id)
    sign = 1 if study.objective.mode == "max" else -1
    done: dict[str, list] = {}  # configuration (sslray.group) -> its completed runs
    for r in children:
        reason = StopReason.of(r.data.tags) or StopReason(Stop.RUNNING)
        if reason.stop is Stop.RUNNING:
            if r.info.status == "FAILED":
                reason = StopReason(Stop.FAILED)
            else:  # stopped by ASHA (or the driver died) before its evaluation
                epochs = max((m.step + 1 for m in store.history(r.info.run_id, "train/loss")), default=0)
                asha = study.early_stopping and study.search == "tpe"
                reason = StopReason(Stop.EARLY_STOPPED if asha else Stop.INTERRUPTED, epochs)
                if r.info.status in ("RUNNING", "FINISHED"):
                    store.set_status(r.info.run_id, "KILLED")
            store.set_tags(r.info.run_id, reason.tags())
        value = r.data.metrics.get(study.objective.metric)
        if reason.stop is Stop.COMPLETED and value is not None:
            done.setdefault(r.data.tags.get(GROUP_TAG, r.info.run_id), []).append((r, value))
    store.set_status(parent_id, status)
    out = {"trials": len(children), "best": None}
    if done:  # the best configuration by the mean of its seeds; its best seed's run stands for it
        runs = max(done.values(), key=lambda rs: sign * sum(v for _, v in rs) / len(rs))
        r, _ = max(runs, key=lambda rv: sign * rv[1])
        value = sum(v for _, v in runs) / len(runs)
        out["best"] = {"run_id": r.info.run_id, study.objective.metric: value, "seeds": len(runs),
                       "method": r.data.params.get("method"),
                       "params": {k: r.data.params.get(k) for k in swept_param_names(study)}}
        store.set_tags(parent_id, {BEST_RUN_TAG: r.info.run_id})
        store.log_metrics(parent_id, {f"best/{study.objective.metric}": value})
    return out


def swept_param_names(study: Study) -> list[str]:
    """The MLflow param names of the swept keys (method settings are logged as ``settings.<key>``)."""
    return ["method"] + [param_name(k) for k in study.space.params]
