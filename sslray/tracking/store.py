"""The one MLflow wrapper: :class:`Store` (a tracking store: experiments, runs, tags, histories,
artifacts) and :class:`Tracker` (one run). Every module that talks to MLflow goes through these.

The store is MLflow's own default, ``sqlite:///mlflow.db`` in the working directory, unless
``MLFLOW_TRACKING_URI`` is set or a URI is passed; so a plain ``mlflow ui`` (or ``sslray ui``) in
that folder shows the runs. Artifacts go to ``./mlartifacts`` beside the database.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UserError
from .tags import KIND_TAG, PARENT_TAG, TRAINING_KIND, tag_is

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(uri: str | None = None) -> str:
    """The store URI (``uri``, else ``$MLFLOW_TRACKING_URI``, else the default), with a relative
    SQLite path made absolute: the same string must name the same file from every process (Ray
    workers and Tune trials run in other folders) and MLflow caches stores by URI string."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


@contextmanager
def _creation_lock(uri: str):
    """For a SQLite store, an exclusive lock (a file in the temp folder, named after the database)
    while the store is opened: MLflow creates and migrates a new database on first use, and a second
    process doing the same at that moment fails."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl
    import hashlib

    name = hashlib.sha1(uri.encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"sslray-mlflow-{name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def store_exists(uri: str | None = None) -> bool:
    """Whether the store is there already (a SQLite store is a file; any other is assumed to be)."""
    uri = tracking_uri(uri)
    return not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).exists()


def check_store_path(uri: str) -> None:
    """A SQLite store must be a file, or a file that can be created: MLflow, given a folder (or a
    path under a file), retries for minutes and warns dozens of times before it gives up."""
    if not uri.startswith("sqlite:///"):
        return
    from ..paths import problem, shown

    path = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    if path.is_file():
        return  # read-only is fine for reading commands; MLflow says so if a write fails
    why = problem(path, "file")
    if why:
        raise UserError(f"the MLflow store {shown(uri)} cannot be used ({why})")


def _quiet_mlflow() -> None:
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # reading study.json is no download

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Store:
    """An MLflow tracking store, addressed by URI."""

    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()  # after the import: mlflow sets its own log level when imported
        self.uri = tracking_uri(uri)
        check_store_path(self.uri)  # a folder or an impossible place: at once, not after MLflow's retries
        with _creation_lock(self.uri):  # two processes creating one new SQLite store race its migration
            try:
                self.client = MlflowClient(self.uri)
                self.client.search_experiments(max_results=1)
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UserError(f"the MLflow store {self.uri} cannot be used: {first[:300]}") from None

    # ---------------------------------------------------------------- experiments
    def experiment(self, name: str, create: bool = True) -> str | None:
        """The id of experiment ``name``, marked as a training experiment (:data:`KIND_TAG`) if it
        has no kind yet; if new, created with the mark and its artifacts beside a SQLite store
        (``create=False``: None instead)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if KIND_TAG not in exp.tags:  # made by an older sslray, or by hand: mark it now
                self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, TRAINING_KIND)
            return exp.experiment_id
        if not create:
            return None
        artifacts = None
        if self.uri.startswith("sqlite:///"):  # keep artifacts beside the database, wherever it is
            db = Path(self.uri[len("sqlite:///"):]).expanduser().resolve()
            artifacts = (db.parent / "mlartifacts").as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifacts, tags={KIND_TAG: TRAINING_KIND})
        except Exception:  # created concurrently by another process
            return self.experiment(name, create=False)

    def experiments(self) -> list:
        """Every active experiment, newest first."""
        return list(self.client.search_experiments(order_by=["creation_time DESC"]))

    # ---------------------------------------------------------------- runs
    def create_run(self, experiment: str, run_name: str | None = None, tags: dict | None = None) -> str:
        tags = {k: str(v) for k, v in (tags or {}).items()}
        return self.client.create_run(self.experiment(experiment), run_name=run_name, tags=tags).info.run_id

    def run(self, run_id: str):
        return self.client.get_run(run_id)

    def has_run(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:
            return False

    def runs(self, experiment_id: str | list[str], where: str = "", order_by: list[str] | None = None,
             max_results: int = 5000) -> list:
        ids = [experiment_id] if isinstance(experiment_id, str) else list(experiment_id)
        return list(self.client.search_runs(ids, filter_string=where, order_by=order_by, max_results=max_results))

    def children(self, experiment_id: str, parent_id: str) -> list:
        return self.runs(experiment_id, tag_is(PARENT_TAG, parent_id))

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING, or a terminal status (FINISHED, FAILED, KILLED)."""
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    # ---------------------------------------------------------------- data
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def history(self, run_id: str, key: str) -> list:
        return list(self.client.get_metric_history(run_id, key))

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def read_text(self, run_id: str, artifact_file: str) -> str | None:
        """An artifact's text, or None if the run has no such artifact."""
        with tempfile.TemporaryDirectory() as d:
            try:
                local = self.client.download_artifacts(run_id, artifact_file, d)
            except Exception:
                return None
            return Path(local).read_text()


class Tracker:
    """One MLflow run: params, per-step metrics, artifacts, tags, status."""

    def __init__(self, experiment: str, run_name: str | None = None, run_id: str | None = None,
                 tags: dict[str, str] | None = None, uri: str | None = None, store: Store | None = None):
        self.store = store or Store(uri)
        if run_id:
            self.run_id = run_id
            self.store.set_status(run_id, "RUNNING")
        else:
            self.run_id = self.store.create_run(experiment, run_name, tags)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; on a resumed run, changed values go to ``override.<key>`` tags instead."""
        existing = self.store.run(self.run_id).data.params
        self.store.log_params(self.run_id, {k: v for k, v in params.items() if k not in existing})
        self.set_tags({f"override.{k}": v for k, v in params.items() if k in existing and existing[k] != str(v)})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.store.log_metrics(self.run_id, metrics, step)

    def has_step(self, key: str, step: int) -> bool:
        """Whether metric ``key`` already has a value at ``step`` (exactly-once epoch logging)."""
        return any(m.step == step for m in self.store.history(self.run_id, key))

    def history(self, key: str) -> dict[int, float]:
        """``{step: value}`` of metric ``key`` in this run."""
        return {m.step: m.value for m in self.store.history(self.run_id, key)}

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.store.set_tags(self.run_id, tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.store.log_artifact(self.run_id, path, artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.store.set_status(self.run_id, status)
