"""Reliability round two, causes 14 and 15: an interrupted command exits 130, marks what it left
unfinished as such and says how to finish it; a successful run prints no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from PIL import Image

ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
REPO = Path(__file__).parents[1]


def _wait_for(predicate, proc: subprocess.Popen, limit: float = 400) -> None:
    """Until ``predicate()`` holds (not a timing assertion: a bound on a hung test)."""
    deadline = time.time() + limit
    while not predicate():
        assert proc.poll() is None, "the command ended before it could be interrupted"
        assert time.time() < deadline, "the command never got there"
        time.sleep(0.3)


def test_r2_14_an_interrupted_sweep_exits_130_marks_its_run_killed_and_says_how_to_resume(tmp_path, mlflow_runs):
    study = {"name": "intr", "question": "q", "methods": ["rotation"], "baselines": False,
             "data": {"name": "synthetic", "limit": 40, "test_limit": 20},
             "config": {"trunk.width": 0.125, "optim.batch_size": 20, "eval.linear.epochs": 2},
             "params": {"optim.lr": {"grid": [0.02, 0.05, 0.1, 0.2]}}, "search": "grid",
             "budget": {"epochs": 1, "cpus_per_trial": 1, "max_concurrent": 1}}
    (tmp_path / "intr.yaml").write_text(yaml.safe_dump(study))
    driver = subprocess.Popen([sys.executable, "-m", "sslray", "sweep", "intr.yaml", "--quiet"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    trials = tmp_path / "runs" / "sweeps" / "intr" / "trials"
    _wait_for(lambda: list(trials.glob("*/transfer.json")), driver)  # one trial done, three to go
    os.killpg(driver.pid, signal.SIGINT)  # a Ctrl-C in the terminal reaches the whole group
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 130, err[-3000:]
    assert "answer:" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("sslray: sweep of study intr interrupted: ") and "of 4 trials ended" in last, err[-3000:]
    assert last.endswith("; finish it with: sslray sweep intr.yaml --resume"), last
    _, runs = mlflow_runs("intr")
    (parent,) = [r for r in runs if r.data.tags.get("sslray.role") == "study"]
    assert parent.info.status == "KILLED"
    children = [r for r in runs if r.data.tags.get("sslray.role") == "trial"]
    assert any(r.data.tags.get("sslray.stop_reason") == "completed" for r in children)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)


SLOW_PREPARE = """
import sys, time
from sslray.data import prepare

real = prepare.write_shard

def slow(*args, **kwargs):  # a shard that takes a while, so that the interrupt lands mid-way
    time.sleep(1.0)
    return real(*args, **kwargs)

prepare.write_shard = slow
from sslray.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_r2_14_an_interrupted_prepare_exits_130_and_leaves_no_partial_shards(tmp_path):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "t" / split / c).mkdir(parents=True)
            for j in range(10):
                Image.new("RGB", (24, 20), (20 * j, 40, 90)).save(tmp_path / "t" / split / c / f"{j}.png")
    (tmp_path / "slow.py").write_text(SLOW_PREPARE)
    proc = subprocess.Popen([sys.executable, "slow.py", "data", "prepare", "t", "--out", "out", "--shard-rows", "1",
                             "--quiet"], cwd=tmp_path, env={**ENV, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: list((tmp_path / "out").glob("*.parquet")), proc)  # some shards are written
    proc.send_signal(signal.SIGINT)  # to the driver alone: it must not be ignored
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("sslray: data prepare interrupted: ") and " of 40 shards were written; removed them and out" \
        in last and last.endswith("; run it again: sslray data prepare t --out out --shard-rows 1"), last
    assert not (tmp_path / "out").exists()  # nothing half-written is left to train on
    assert "Traceback" not in err


def test_r2_15_a_successful_two_worker_run_prints_no_traceback(tmp_path):
    """Ray's teardown once printed tracebacks after a successful run (the train controller's
    GetTimeoutError, workers' SystemExit): a user reads them as failures."""
    cmd = [sys.executable, "-m", "sslray", "train", "--method", "simclr", "--workers", "2", "--epochs", "1",
           "--set", "data.limit=40", "--set", "data.test_limit=20", "--set", "trunk.width=0.125",
           "--set", "optim.batch_size=20", "--set", "eval.linear.epochs=2", "--quiet"]
    r = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("run ") and "Traceback" not in r.stderr and "SystemExit" not in r.stderr, r.stderr


def test_r2_15_every_ray_process_drops_the_teardown_traceback_of_a_successful_run(monkeypatch):
    """The placement-group cleaner's slow stop (a busy machine) logged a traceback in Ray Train's
    controller after a successful run; every Ray process now drops that record, through the setup
    hook the cluster is started with."""
    import logging

    import ray

    from sslray import cluster

    asked = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: asked.update(kw))
    cluster.connect(None)
    assert asked["runtime_env"] == {"worker_process_setup_hook": "sslray.cluster.quiet_ray_teardown"}
    cluster.quiet_ray_teardown()
    cluster.quiet_ray_teardown()  # once is enough: no second filter
    name, start = next(iter(cluster.TEARDOWN_NOISE.items()))
    logger = logging.getLogger(name)
    assert sum(isinstance(f, cluster._Drop) for f in logger.filters) == 1
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)  # whatever level an earlier Ray start left on Ray's loggers
    try:
        try:
            raise TimeoutError("GetTimeoutError")
        except TimeoutError:
            logger.exception(start + ".")
        logger.warning("something else")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert seen == ["something else"]
