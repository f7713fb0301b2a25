"""Reliability round two, cause 13: a run being trained (or resumed) and a study being swept are
held by a lock, and a second process is refused in one line, before it does any work. The locks
are ``flock``s, so the system releases them whatever way their process ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sslray.cli import main
from sslray.errors import UserError
from sslray.paths import Held, lock_file

TINY = ["--set", "data.limit=40", "--set", "data.test_limit=20", "--set", "trunk.width=0.125", "--set",
        "optim.batch_size=20", "--epochs", "1", "--quiet"]


def test_a_lock_held_by_another_process_refuses_and_is_freed_when_it_dies(tmp_path):
    path = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"from sslray.paths import Held; h = Held({str(path)!r}, 'busy'); "
                               "print('held', flush=True); import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as e:
            Held(path, "the thing is busy")
        assert str(e.value) == f"the thing is busy (process {holder.pid})"
    finally:
        holder.kill()  # not a clean exit: the system still releases its lock
        holder.wait()
    with Held(path, "busy") as held:
        assert not held.released
    assert held.released
    Held(path, "busy").release()  # and again


def test_r2_13_a_second_resume_of_a_run_in_training_is_refused(tmp_path, capsys, mlflow_runs):
    assert main(["train", "--method", "rotation", "--no-eval", *TINY]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    client, (run,) = mlflow_runs()
    history = client.get_metric_history(run.info.run_id, "train/loss")
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    with Held(run_dir / ".lock", "held by the test"):  # as the process training it holds it
        assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(
        f"sslray: error: run {run_dir} is being trained by another sslray process"), err
    assert client.get_metric_history(run.info.run_id, "train/loss") == history  # nothing trained or logged
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint


def test_r2_13_a_study_being_swept_in_a_folder_is_refused_a_second_sweep(tmp_path, capsys):
    from sslray.sweep.runner import study_dir
    from sslray.sweep.study import load_study

    (tmp_path / "s.yaml").write_text("question: q\nmethods: [rotation]\nparams: {optim.lr: {grid: [0.05, 0.1]}}\n")
    root = study_dir(load_study("s.yaml"), "runs")
    with Held(lock_file(root, "study"), "held by the test"):  # as a running `sslray sweep s.yaml` holds it
        assert main(["sweep", "s.yaml"]) == 2
        err = capsys.readouterr().err.strip()
    assert lock_file(study_dir(load_study("s.yaml"), "elsewhere"), "study") != lock_file(root, "study")  # another sweep
    assert err == ("sslray: error: study s is being swept in runs by another `sslray sweep`; wait for it to end, "
                   f"or use another --output-dir (process {os.getpid()})")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
