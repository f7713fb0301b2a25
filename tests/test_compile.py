"""``train.compile``: the training step under torch.compile gives the eager step's numbers, logs its
compile time, keeps state dicts free of compile prefixes, and a step that cannot compile trains
eagerly after one line. (aot_eager: the graphs Dynamo and AOTAutograd make, without inductor's code
generation, which takes minutes on two cores; the GPU benchmark compiles with inductor.)"""

from __future__ import annotations

from pathlib import Path

import torch

from sslray.cli import main
from sslray.train import loop

RUN = ["train", "--method", "rotation", "--epochs", "1", "--set", "data.limit=96", "--set", "trunk.width=0.125",
       "--set", "optim.batch_size=32", "--no-eval", "--quiet"]


def _last(mlflow_runs):
    client, runs = mlflow_runs()
    return runs[0].data.metrics


def test_a_compiled_step_trains_as_the_eager_one_and_logs_its_compile_time(mlflow_runs, capsys):
    assert main(RUN) == 0
    eager = _last(mlflow_runs)
    assert main([*RUN, "--set", "train.compile=true", "--set", "debug.compile_backend=aot_eager"]) == 0
    compiled = _last(mlflow_runs)
    assert abs(compiled["train/loss"] - eager["train/loss"]) < 1e-4 and compiled["train/acc"] == eager["train/acc"]
    assert compiled["time/compile_s"] > 0 and "time/compile_s" not in eager
    for m in (eager, compiled):  # where the time went, for every run
        assert {"time/data_wait", "time/host_to_device", "time/decode", "time/step", "train/img_per_s"} <= set(m)
        assert abs(m["time/data_wait"] + m["time/host_to_device"] + m["time/decode"] + m["time/step"] - 1) < 1e-9
    newest = max(Path("runs").iterdir(), key=lambda p: p.stat().st_mtime)
    keys = torch.load(newest / "trunk.pt", weights_only=True).keys()
    assert keys and not any("_orig_mod" in k for k in keys)


def test_a_step_that_cannot_compile_trains_eagerly_after_one_line(monkeypatch, mlflow_runs, capsys):
    assert main(RUN) == 0
    eager = _last(mlflow_runs)

    def refuse(model, **kw):
        def step(*a, **k):
            raise RuntimeError("Dynamo cannot trace this\nsecond line")
        return step

    monkeypatch.setattr(loop.torch, "compile", refuse)
    capsys.readouterr()
    assert main([*RUN, "--set", "train.compile=true"]) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if line.startswith("train.compile:")]
    assert said == ["train.compile: rotation could not be compiled (RuntimeError: Dynamo cannot trace this); "
                    "training eagerly"]
    fallback = _last(mlflow_runs)
    assert abs(fallback["train/loss"] - eager["train/loss"]) < 1e-6 and "time/compile_s" not in fallback
