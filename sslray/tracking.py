"""MLflow tracking without global state: one :class:`Tracker` per run, usable from any process.

The store is MLflow's own default, ``sqlite:///mlflow.db`` in the working directory, unless
``MLFLOW_TRACKING_URI`` is set; so a plain ``mlflow ui`` (or ``sslray ui``) in that folder shows
the runs. Artifacts go to ``./mlartifacts`` beside the database unless the experiment says else.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    """The store URI, with a relative SQLite path made absolute.

    Absolute because the same URI string must name the same file from every process (Ray
    workers and Tune trials run in other folders) and MLflow caches stores by URI string.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        uri = prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


def _quiet_mlflow() -> None:
    import logging

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def client(uri: str | None = None):
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()  # after the import: mlflow sets its own log level when imported

    return MlflowClient(uri or tracking_uri())


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    uri = c._tracking_client.tracking_uri
    artifacts = None
    if uri.startswith("sqlite:///"):  # keep artifacts beside the database, wherever it is
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        artifacts = (db.parent / "mlartifacts").as_uri()
    try:
        return c.create_experiment(name, artifact_location=artifacts)
    except Exception:  # created concurrently by another process
        return c.get_experiment_by_name(name).experiment_id


class Tracker:
    """One MLflow run: params, per-step metrics, artifacts, tags, status."""

    def __init__(self, experiment: str, run_name: str | None = None, run_id: str | None = None,
                 tags: dict[str, str] | None = None, uri: str | None = None):
        self.client = client(uri)
        if run_id:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            exp = experiment_id(self.client, experiment)
            self.run_id = self.client.create_run(exp, run_name=run_name, tags=tags or {}).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params; on a resumed run, changed values go to ``override.<key>`` tags instead."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        changed = {f"override.{k}": str(v) for k, v in params.items() if k in existing and existing[k] != str(v)}
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])
        self.set_tags(changed)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def has_step(self, key: str, step: int) -> bool:
        """Whether metric ``key`` already has a value at ``step`` (exactly-once epoch logging)."""
        return any(m.step == step for m in self.client.get_metric_history(self.run_id, key))

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)
