"""Shared fixtures: every test runs in its own folder with its own MLflow store and data cache."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import yaml

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



@pytest.fixture(scope="module")
def clips():
    """Eight generated clips of 16 frames of 32 px (seed 0), as
    :func:`~sslray.data.video.generate_clips` returns them: ``(video uint8 (8, 16, 3, 32, 32),
    labels, audio, recorded fields)``; the video methods' tests (avc, tracking) share them."""
    from sslray.data.video import generate_clips

    return generate_clips(8, frames=16, size=32, seed=0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for gloo, Ray and the MLflow UI)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_probed(metrics: dict, keys, n_test: int = 100) -> None:
    """Top-1 values a working probe gives: each a whole count of right answers over the ``n_test``
    test images. Every accuracy lies in [0, 1]; a mean probability, a loss, a rate over another
    number of images or a top-1 averaged over batches of unequal size mostly is no such count."""
    for k in keys:
        v = metrics[k]
        assert 0 <= v <= 1 and abs(v * n_test - round(v * n_test)) < 1e-6, f"{k} = {v} is no count over {n_test}"


# ---- sweeps: the tiny study the sweep, study and report tests share
TINY_STUDY = {
    "question": "Does the learning rate matter for rotation on tiny data?",
    "methods": ["rotation"],
    "params": {"optim.lr": {"grid": [0.05, 0.2]}},
    "search": "grid",
    "data": {"name": "synthetic", "limit": 200, "test_limit": 100},
    "config": {"trunk.width": 0.125, "optim.batch_size": 50, "eval.linear.epochs": 3, "eval.feature_dim": 512},
    "budget": {"trials": 1, "epochs": 1, "cpus_per_trial": 1},
    "objective": {"metric": "transfer/res3/top1", "mode": "max"},
    "early_stopping": None,
    "report": {"x": "optim.lr"},
    "baselines": False,  # the shared sweep (tiny_sweep, in test_sweep.py) runs them; the others need not
}


def _write(path: Path, data) -> str:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)
