"""The floor and ceiling of a study: the ``random`` trunk and the ``supervised`` one, trained and
probed at the study's own data, trunk and evaluation settings (and its epochs, for supervised).

They answer "is this number good?" beside every report, so they run once per set of those
settings and are reused by every study that shares them: each is an MLflow run of the experiment
``sslray-baselines`` tagged with a key of its settings (``sslray.baseline_key``); a study finds a
finished one by that key or runs it, with a trial's resources, beside its trials.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..config import RunConfig, setting_key
from ..tracking.tags import BASELINE_KEY_TAG, BASELINE_TAG, ROLE_TAG, tag_is
from .study import Study, trial_overrides

EXPERIMENT = "sslray-baselines"
ROLES = {"random": "floor", "supervised": "ceiling"}
# the blocks of a study's settings a baseline shares; method settings and the optimiser are its own
SHARED = ("data.", "trunk.", "eval.")


def baseline_overrides(study: Study, method: str, root: Path) -> dict:
    over = {k: v for k, v in trial_overrides(study, {}).items() if k.startswith(SHARED)}
    if "optim.batch_size" in study.config:
        over["optim.batch_size"] = study.config["optim.batch_size"]
    b = study.budget
    over.update({"run.epochs": 0 if method == "random" else b.epochs, "run.experiment": EXPERIMENT,
                 "run.output_dir": str(root / "baselines"), "dist.workers": b.workers_per_trial,
                 "dist.cpus_per_worker": b.cpus_per_trial, "dist.gpus_per_worker": b.gpus_per_trial,
                 "run.threads": max(1, int(b.cpus_per_trial))})
    if b.data_cpus_per_trial:
        over["data.cpus_per_worker"] = b.data_cpus_per_trial
    return over


def baseline_key(cfg: RunConfig) -> str:
    """What makes two baselines the same: every setting but seeds, names, folders and resources."""
    return hashlib.sha1(setting_key(cfg.model_dump(), ("dist.",)).encode()).hexdigest()[:16]


def _run_baseline(cfg_dict: dict, key: str, uri: str) -> str:
    from ..train.build import build_config, build_run
    from ..train.run import run

    cfg = build_config(cfg_dict["method"], {}, cfg_dict)
    result = run(build_run(cfg), progress=False, uri=uri,
                 tags={BASELINE_TAG: cfg.method, BASELINE_KEY_TAG: key, ROLE_TAG: "baseline"})
    return result.run_id


class Baselines:
    """A study's floor and ceiling: those found in the store, and those started as Ray tasks that
    :meth:`collect` waits for. Started before the trials, they share the cluster with them, so on a
    small machine the trials fill the CPUs a baseline leaves idle instead of waiting for both."""

    def __init__(self, found: dict[str, str], refs: dict):
        self.found, self.refs = found, refs

    def collect(self, wait: bool = True) -> tuple[dict[str, str], list[str]]:
        """``({"random": run_id, "supervised": run_id}, problems)``. ``wait=False`` (a sweep stopped
        early): take the finished ones, cancel the rest; a baseline that fails is a problem, not the
        end of the study."""
        import ray

        found, problems = dict(self.found), []
        for method, ref in self.refs.items():
            if not wait and not ray.wait([ref], timeout=0)[0]:
                ray.cancel(ref)  # not force=True: it races the task's reply (see data.prepare)
                problems.append(f"the {ROLES[method]} ({method}) did not finish: the sweep stopped first")
                continue
            try:
                found[method] = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the study goes on without that line
                cause = getattr(e, "cause", None) or e
                problems.append(f"the {ROLES[method]} ({method}) failed: {type(cause).__name__}: "
                                f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}")
        self.refs = {}
        return found, problems


def start_baselines(study: Study, store, root: Path) -> Baselines:
    """Find the study's floor and ceiling by key in the store, or start them now as Ray tasks with a
    trial's resources."""
    import ray

    from ..train.build import build_config

    exp = store.experiment(EXPERIMENT)
    found, todo = {}, {}
    for method in ROLES:
        cfg = build_config(method, baseline_overrides(study, method, root))
        key = baseline_key(cfg)
        have = store.runs(exp, f"{tag_is(BASELINE_KEY_TAG, key)} and attributes.status = 'FINISHED'",
                          order_by=["start_time DESC"], max_results=1)
        if have:
            found[method] = have[0].info.run_id
        else:
            todo[method] = (cfg, key)
    refs = {}
    if todo:
        b = study.budget
        one = b.workers_per_trial == 1  # more workers: the run starts its own Ray Train workers
        task = ray.remote(_run_baseline).options(num_cpus=b.cpus_per_trial if one else 0,
                                                 num_gpus=b.gpus_per_trial if one else 0, max_retries=0)
        print(f"floor and ceiling: running {', '.join(todo)} at this study's data, trunk and evaluation "
              f"settings (once; reused by every study that shares them)", flush=True)
        refs = {m: task.remote(cfg.model_dump(), key, store.uri) for m, (cfg, key) in todo.items()}
    return Baselines(found, refs)


def ensure_baselines(study: Study, store, root: Path) -> tuple[dict[str, str], list[str]]:
    """``({"random": run_id, "supervised": run_id}, problems)``: found by key in the store, or run
    now (:func:`start_baselines`, then waited for)."""
    return start_baselines(study, store, root).collect()
