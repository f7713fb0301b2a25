"""Ray Train: DDP over two Ray nodes, failure recovery, cluster YAML, and bad cluster input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import free_port
from sslray.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "trunk.width=0.125", "--set", "data.limit=400", "--set", "optim.batch_size=100",
         "--set", "seed=1", "--quiet"]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0"}


def _sslray(*args, cwd, timeout=600):
    r = subprocess.run([sys.executable, "-m", "sslray", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _steps(run_dir: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "debug" / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture
def two_node_cluster(tmp_path):
    """A Ray head and a second Ray node as separate processes, each with one CPU of its own.

    Both run with ``--block`` in their own session, so teardown stops exactly these processes.
    """
    port, dash = free_port(), free_port()
    head = subprocess.Popen(["ray", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=true",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--block",
                             "--resources", '{"node_a": 1}'],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [head]
    try:
        _wait_for_port(port, 90)
        second = subprocess.Popen(["ray", "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--block",
                                   f"--dashboard-agent-listen-port={free_port()}", "--resources", '{"node_b": 1}'],
                                  env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(second)
        _wait_for_nodes(f"127.0.0.1:{port}", 2, 90)
        yield f"127.0.0.1:{port}"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        deadline = time.time() + 45
        for p in procs:
            try:
                p.wait(max(1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _wait_for_port(port: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray head did not open port {port}")


def _wait_for_nodes(address: str, n: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        r = subprocess.run(["ray", "status", "--address", address], env=ENV, capture_output=True, text=True)
        if r.stdout.count(" node_") >= n and "node_b" in r.stdout:
            return
        time.sleep(2)
    raise TimeoutError(f"{n} Ray nodes did not come up")


def test_ddp_over_two_ray_nodes_matches_one_worker(two_node_cluster, tmp_path):
    common = ["train", "--method", "rotation", "--epochs", "2", "--no-eval", "--set", "debug.record_steps=true", *SMALL]
    _sslray(*common, "--address", two_node_cluster, "--workers", "2", "--set", "dist.placement=STRICT_SPREAD",
            "--set", "output_dir=two", cwd=tmp_path)
    _sslray(*common, "--set", "output_dir=one", cwd=tmp_path)
    two = next((tmp_path / "two").glob("rotation-*"))
    one = next((tmp_path / "one").glob("rotation-*"))
    r0, r1, single = _steps(two, 0), _steps(two, 1), _steps(one, 0)
    assert len(r0) == len(r1) == len(single) == 8  # 400 images / global batch 100 x 2 epochs

    # the two workers ran on the two different Ray nodes
    assert {r["node"] for r in r0} != {r["node"] for r in r1}
    for a, b, s in zip(r0, r1, single):
        # disjoint shards that together are exactly the 1-worker global batch
        assert not set(a["idx"]) & set(b["idx"]) and len(a["idx"]) == len(b["idx"]) == 50
        assert sorted(a["idx"] + b["idx"]) == sorted(s["idx"])
        # DDP keeps the replicas identical after every step
        assert a["weights"] == pytest.approx(b["weights"], rel=1e-9, abs=1e-9)
        # same loss curve as one worker with the same global batch, within 3% per step (the gap is
        # BatchNorm statistics over 50 instead of 100 images)
        assert (a["loss"] + b["loss"]) / 2 == pytest.approx(s["loss"], rel=0.03)


def test_killed_worker_resumes_from_last_checkpoint_and_logs_each_epoch_once(tmp_path, mlflow_runs):
    _sslray("train", "--method", "rotation", "--epochs", "3", "--workers", "2", "--max-failures", "1", "--no-eval",
            "--set", "debug.kill_at=[1,2]", *SMALL, cwd=tmp_path)
    run_dir = next((tmp_path / "runs").glob("rotation-*"))
    assert (run_dir / "debug" / "killed").exists()  # rank 0 really died mid-epoch 2
    c, runs = mlflow_runs()
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = c.get_metric_history(runs[0].info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [0, 1, 2]  # every epoch exactly once
    ckpts = sorted((tmp_path / "runs" / "ray" / run_dir.name).glob("checkpoint_epoch=*"))
    assert ckpts[-1].name == "checkpoint_epoch=0003"
    import torch

    state = torch.load(ckpts[-1] / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["mlflow_run_id"] == runs[0].info.run_id


def test_cluster_yaml_validates_against_rays_schema_and_is_private():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(raw))
    head_cmds = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_cmds and "0.0.0.0" not in head_cmds
    assert "RAY_AUTH_MODE=token" in head_cmds and "RAY_AUTH_MODE=token" in " ".join(raw["worker_start_ray_commands"])
    assert "mlflow server --host $(hostname -I" in head_cmds  # the private address, not all interfaces
    workers = {k: v for k, v in raw["available_node_types"].items() if k != raw["head_node_type"]}
    assert all(v["max_workers"] >= v["min_workers"] for v in workers.values())
    assert any("pip install" in c and "-e" in c for c in raw["setup_commands"])


@pytest.mark.parametrize("args, expected", [
    (["--workers", "0"], "dist.workers"),
    (["--workers", "2", "--address", "127.0.0.1:1"], "cannot reach Ray"),
    (["--workers", "2", "--storage", "/proc/sslray-cannot-write"], "not writable"),
])
def test_bad_cluster_input_is_one_line(args, expected, capsys):
    assert main(["train", "--method", "rotation", *args, *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err
    assert not Path("mlflow.db").exists()


def test_more_gpus_than_the_cluster_has_says_what_is_free(capsys):
    import ray

    try:
        assert main(["train", "--method", "rotation", "--workers", "2", "--gpus-per-worker", "1", *SMALL]) == 2
    finally:
        ray.shutdown()
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "asked for 2 GPUs" in err and "free" in err
    assert not Path("mlflow.db").exists()
