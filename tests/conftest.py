"""Shared fixtures: every test runs in its own folder with its own MLflow store and data cache."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(2)

# tiny but real: a 1/8-width ResNet-18 on a few hundred synthetic images
TINY = ["--set", "trunk.width=0.125", "--set", "data.limit=200", "--set", "data.test_limit=100",
        "--set", "optim.batch_size=50", "--set", "eval.linear.epochs=5", "--set", "eval.feature_dim=1024",
        "--quiet"]


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    os.environ["SSLRAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # exercise the default store: ./mlflow.db
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    yield


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def mlflow_runs():
    """All runs of the default store in the current folder, newest first."""

    def _runs(experiment: str = "sslray"):
        from sslray.tracking import Store, tracking_uri

        assert tracking_uri().endswith(str(os.getcwd()) + "/mlflow.db")
        c = Store().client
        exp = c.get_experiment_by_name(experiment)
        return c, (c.search_runs([exp.experiment_id], order_by=["start_time DESC"]) if exp else [])

    return _runs



def assert_probed(metrics: dict, keys, n_test: int = 100) -> None:
    """Top-1 values a working probe gives: each a whole count of right answers over the ``n_test``
    test images. Every accuracy lies in [0, 1]; a mean probability, a loss, a rate over another
    number of images or a top-1 averaged over batches of unequal size mostly is no such count."""
    for k in keys:
        v = metrics[k]
        assert 0 <= v <= 1 and abs(v * n_test - round(v * n_test)) < 1e-6, f"{k} = {v} is no count over {n_test}"
