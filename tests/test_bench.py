"""``sslray bench``: each command runs end to end at tiny sizes, prints its RATIO line and writes its
figures. No timing assertions: times only need to be positive and finite; what is not a time
(epochs, trials, results, memory) is checked for what it must be."""

import json
import math
import re

import pytest

from sslray.cli import main

TINY = ["--threads", "1", "--width", "0.125"]
RATIO = re.compile(r"^RATIO (\w+) = ([0-9.]+|inf) \(target <= ([0-9.]+): (met|not met)\)$", re.M)


def _bench(what, tmp_path, capsys, *args):
    path = tmp_path / f"{what}.json"
    reps = ["--reps", "1"] if what in ("step", "eval", "negatives", "trial") else []
    assert main(["bench", what, "--json", str(path), *TINY, *reps, *args]) == 0
    out = capsys.readouterr().out
    lines = RATIO.findall(out)
    assert len(lines) == 1, out
    name, value, target, verdict = lines[0]
    figures = json.loads(path.read_text())
    assert name == what == figures["bench"]
    assert float(target) == figures["target"] and verdict == ("met" if figures["met"] else "not met")
    assert figures["ratio"] == pytest.approx(float(value), abs=1e-3)
    return figures


def _positive(*values):
    for v in values:
        assert v > 0 and math.isfinite(v), values


def test_step_compares_the_shared_loop_with_plain_loops(tmp_path, capsys):
    f = _bench("step", tmp_path, capsys, "--batch", "8", "--steps", "1", "--warmup", "1")
    assert [r["method"] for r in f["rows"]] == ["rotation", "pirl"]
    for r in f["rows"]:
        _positive(r["ours_s"], r["plain_s"], r["plain_cl_s"], r["ratio"], *r["pipeline_s"].values())
    assert f["ratio"] == max(r["ratio"] for r in f["rows"])
    assert f["settings"]["threads"] == 1 and f["settings"]["batch"] == 8


def test_eval_times_every_layer_against_one_epoch(tmp_path, capsys):
    f = _bench("eval", tmp_path, capsys, "--images", "40", "--test-images", "20", "--batch", "20",
               "--probe-epochs", "1", "--feature-dim", "64")
    seconds = {r["part"].strip(): r["seconds"] for r in f["rows"]}
    _positive(f["ratio"], *seconds.values())
    assert f["ratio"] == pytest.approx(seconds["evaluation, all layers"] / seconds["pretraining epoch (rotation)"])
    assert f["settings"]["layers"] == ["conv1", "res2", "res3", "res4", "res5"]


def test_negatives_scale_against_the_smallest_k(tmp_path, capsys):
    f = _bench("negatives", tmp_path, capsys, "--batch", "8", "--steps", "1", "--negatives", "1,32",
               "--methods", "npid")
    assert [(r["method"], r["negatives"]) for r in f["rows"]] == [("npid", 1), ("npid", 32)]
    assert f["rows"][0]["ratio"] == 1.0
    _positive(f["ratio"], *(r["seconds"] for r in f["rows"]))
    assert "npid: K=32000 not measured; headline uses K=32" in f["notes"] and f["settings"]["bank_size"] == 33


def test_a_flag_that_does_not_apply_is_one_line(capsys):
    assert main(["bench", "eval", "--negatives", "1,2"]) == 2
    assert capsys.readouterr().err.strip() == "sslray: error: unrecognized arguments: --negatives 1,2"


def test_trial_compares_a_sweep_with_back_to_back_trainings(tmp_path, capsys):
    f = _bench("trial", tmp_path, capsys, "--trials", "1", "--images", "40", "--batch", "20",
               "--probe-epochs", "1", "--feature-dim", "64")
    per_trial = {r["part"]: r["per_trial"] for r in f["rows"]}
    _positive(f["ratio"], *(r["seconds"] for r in f["rows"] if r["seconds"] is not None))
    assert math.isfinite(per_trial["fixed cost per trial"]) and f["settings"]["trials"] == 1


def test_search_measures_tpe_asha_against_the_grid(tmp_path, capsys):
    # a small search (~1 min on 2 CPUs): a 4-point grid of 2 epochs each against 2 TPE+ASHA trials
    f = _bench("search", tmp_path, capsys, "--methods", "rotation", "--trials", "2", "--images", "40",
               "--batch", "20", "--probe-epochs", "1", "--feature-dim", "64")
    grid, tpe = f["rows"]
    assert grid["trials"] == f["settings"]["grid_points"] == 4 and grid["epochs"] == 4 * 2
    assert [r["epochs"] for r in grid["runs"]] == [2] * 4 and all(r["objective"] is not None for r in grid["runs"])
    lrs = sorted(r["optim.lr"] for r in grid["runs"])  # the grid spans the log-uniform range, ends included
    assert lrs[0] == pytest.approx(0.02) and lrs[-1] == pytest.approx(0.5) and len(set(lrs)) == 4
    # TPE+ASHA: its 2 trials, inside the space, each stopped by ASHA after 1 epoch or run to the end
    assert tpe["trials"] == len(tpe["runs"]) == 2 and {r["method"] for r in tpe["runs"]} == {"rotation"}
    assert all(0.02 <= r["optim.lr"] <= 0.5 and r["epochs"] in (1, 2) for r in tpe["runs"])
    assert tpe["epochs"] == sum(r["epochs"] for r in tpe["runs"]) < grid["epochs"]  # fewer epochs than the grid
    # ...and it found a configuration as good as one of the grid's top three (a count over the 20 test images)
    values = sorted((r["objective"] for r in grid["runs"]), reverse=True)
    assert grid["best"] == values[0]
    found = [r["objective"] for r in tpe["runs"] if r["objective"] is not None]
    assert found and tpe["best"] == max(found) >= values[2]
    for v in values + found:
        assert abs(v * 20 - round(v * 20)) < 1e-6
    # the headline: the share of the grid's epochs spent until TPE came within 1 point of the grid's best
    if tpe["to_reach"] is None:
        assert max(found) < values[0] - 0.01 and f["ratio"] is None
    else:
        assert f["ratio"] == pytest.approx(tpe["to_reach"] / grid["epochs"]) and 1 <= tpe["to_reach"] <= tpe["epochs"]


def test_data_measures_decode_rate_data_wait_and_memory_against_collection_size(tmp_path, capsys):
    f = _bench("data", tmp_path, capsys, "--images", "48", "--sizes", "120,200", "--size", "96", "--batch", "8",
               "--rss-images", "100", "--rss-size", "32", "--cpus", "1")
    values = {r["part"]: r["value"] for r in f["rows"]}
    _positive(values["decode + crop to 96 px, one process"], values["Ray Data pipeline start (first batch)"])
    assert 0 <= f["ratio"] <= 1 and f["ratio"] == values["data wait after the first batch"]
    rss, private = f["settings"]["rss_mb"], f["settings"]["private_mb"]
    assert set(rss) == set(private) == {"stream/100", "stream/400", "memory/100", "memory/400"}
    # a process that trains an epoch peaks at least where one that only imports the same code does, and
    # within 2 GB of it (a measure in kB, in GB, or of another process fails); its private part is part of it
    bare = _peak_mb_of_importing("torch", "sslray.train.build", "sslray.train.loop")
    for key, mb in rss.items():
        assert bare <= mb <= bare + 2048, (key, mb, bare)
        assert 0 < private[key] <= mb, (key, private[key], mb)


def _peak_mb_of_importing(*modules) -> float:
    """VmHWM (MB) of a fresh Python process that imports ``modules``, read as the bench reads its own."""
    import subprocess
    import sys

    code = (f"import {', '.join(modules)}\n"
            "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_gpu_refuses_without_a_gpu_and_runs_as_a_smoke_test_with_cpu(tmp_path, capsys):
    import torch

    if not torch.cuda.is_available():
        assert main(["bench", "gpu"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err
    rows = tmp_path / "rows.jsonl"
    f = _bench("gpu", tmp_path, capsys, "--cpu", "--images", "24", "--sizes", "64,80", "--size", "64", "--batch", "4",
               "--steps", "2", "--warmup", "1", "--arch", "resnet18", "--width", "0.125", "--cpus", "1",
               "--backend", "aot_eager", "--jsonl", str(rows), "--parts", "ceiling,memory,pipeline,stream")
    got = [(r["part"], r["method"], r.get("mode", "")[:10], r.get("decode")) for r in f["rows"]]
    assert got == [("ceiling", "simclr", "eager", None), ("ceiling", "simclr", "compiled", None),
                   ("memory", "simclr", "compiled", None), ("pipeline", "simclr", "decode=cpu", None),
                   ("pipeline", "simclr", "decode=gpu", None), ("pipeline", "simclr", "decode + c", None),
                   ("stream", "simclr", "compiled", "cpu"), ("stream", "simclr", "compiled", "gpu"),
                   ("ceiling", "rotation", "eager", None), ("ceiling", "rotation", "compiled", None),
                   ("memory", "rotation", "compiled", None),
                   ("stream", "rotation", "compiled", "cpu"), ("stream", "rotation", "compiled", "gpu")]
    assert all(r["img_per_s"] > 0 for r in f["rows"])
    ceiling = f["rows"][1]["img_per_s"]  # each loop row against its method's compiled hand-written step
    assert f["rows"][6]["vs_ceiling"] == pytest.approx(f["rows"][6]["img_per_s"] / ceiling)
    assert 0 <= f["ratio"] == max(r["data_wait"] for r in f["rows"] if r["part"] == "stream") <= 1
    # each row reached the file as it finished; --report tabulates them again
    assert [json.loads(line)["part"] for line in rows.read_text().splitlines()] == [r["part"] for r in f["rows"]]
    assert main(["bench", "gpu", "--report", str(rows)]) == 0
    assert "simclr streamed (decode=cpu) / compiled ceiling" in capsys.readouterr().out


def test_gpu_times_the_loop_of_any_method_eager_or_compiled_and_keeps_the_ceiling_to_its_two(tmp_path, capsys):
    small = ["--cpu", "--images", "24", "--size", "32", "--batch", "4", "--steps", "2", "--warmup", "1",
             "--arch", "resnet18", "--width", "0.125", "--cpus", "1", "--backend", "aot_eager", "--parts", "memory"]
    path = tmp_path / "memory.json"
    assert main(["bench", "gpu", "--json", str(path), *small, "--methods", "moco,jigsaw", "--no-compile"]) == 0
    f = json.loads(path.read_text())
    assert [(r["part"], r["method"], r["mode"]) for r in f["rows"]] == [("memory", "moco", "eager"),
                                                                          ("memory", "jigsaw", "eager")]
    assert all(r["img_per_s"] > 0 and r["compile_s"] is None for r in f["rows"])
    # no streamed row: the data-wait headline says so instead of "0.000: met"
    assert "RATIO gpu = - (target <= 0.05: not measured)" in capsys.readouterr().out
    assert f["ratio"] is None and f["met"] is False
    assert main(["bench", "gpu", *small[:-2], "--parts", "ceiling", "--methods", "moco"]) == 2
    assert "the ceiling part takes simclr and rotation" in capsys.readouterr().err
    assert main(["bench", "gpu", *small, "--methods", "simclr,nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
