import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, assert_probed
from PIL import Image

from sslray import LAYERS
from sslray.cli import main


def _train(*args):
    return main(["train", *args, *TINY])


def test_rotation_cli_run_logs_every_layer_and_the_plot(mlflow_runs, capsys):
    assert _train("--method", "rotation", "--data", "synthetic", "--epochs", "2") == 0
    c, runs = mlflow_runs()
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for kind in ("transfer", "knn", "untuned"):  # counts of right answers over the 100 test images
        assert_probed(run.data.metrics, [f"{kind}/{layer}/top1" for layer in LAYERS])
    assert [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    assert 0 < run.data.metrics["train/acc"] <= 1
    for key in ("health/std", "health/rank", "health/alignment", "health/uniformity"):  # every epoch
        assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [0, 1], key
    assert 1.5 < run.data.metrics["health/rank"] <= 64 and "sslray.collapsed" not in run.data.tags
    p = run.data.params
    assert p["method"] == "rotation" and p["epochs"] == "2" and p["trunk.width"] == "0.125"
    assert p["optim.batch_size"] == "50" and float(p["resolved.optim.effective_lr"]) == pytest.approx(0.1 * 50 / 256)
    assert p["probe/res5/dim"] == str(64 * 4 * 4) and p["eval.linear.epochs"] == "5"
    plot = Path(c.download_artifacts(run.info.run_id, "plots/per_layer.png", "."))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"transfer.json", "probe_grid.json"} <= {a.path for a in c.list_artifacts(run.info.run_id)}
    grid = json.loads(Path(c.download_artifacts(run.info.run_id, "probe_grid.json", ".")).read_text())
    for layer in LAYERS:  # each layer's probe lr and weight decay, chosen on validation, logged
        chosen = grid[layer]["chosen"]
        assert run.data.metrics[f"transfer/{layer}/lr"] == chosen["lr"] in [0.0003, 0.001, 0.003, 0.01]
        assert len(grid[layer]["heads"]) == 7


def test_protocols_from_the_cli_log_fine_tune_and_low_shot_metrics(mlflow_runs, capsys):
    assert _train("--method", "rotation", "--data", "synthetic", "--epochs", "1",
                  "--set", "eval.protocols=[linear,finetune,lowshot]", "--set", "eval.layers=[res3,res5]",
                  "--set", "eval.finetune.epochs=1", "--set", "eval.lowshot.fractions=[0.1]",
                  "--set", "eval.lowshot.shots=[5]") == 0
    c, runs = mlflow_runs()
    m = runs[0].data.metrics
    for key in ("finetune/top1", "lowshot/10pct/finetune/top1", "lowshot/5shot/finetune/top1",
                "lowshot/10pct/linear/res3/top1", "lowshot/5shot/linear/res5/top1", "transfer/res5/top1"):
        assert_probed(m, [key])  # each a count over the same 100 test images
    assert m["lowshot/10pct/images"] == 20 and m["lowshot/5shot/images"] == 5 * 10  # 200 images, 10 classes
    assert not any(k.startswith("knn/") for k in m)  # knn was not asked for
    assert runs[0].data.params["eval.protocols"] == "linear,finetune,lowshot"


def test_at_epochs_keeps_trunks_evaluates_them_by_epoch_and_eval_refuses_an_epoch_not_kept(mlflow_runs, capsys):
    assert _train("--method", "rotation", "--data", "synthetic", "--epochs", "3", "--set", "eval.at_epochs=[1]",
                  "--set", "eval.layers=[res3,res5]") == 0
    c, runs = mlflow_runs()
    run = runs[0]
    hist = {m.step: m.value for m in c.get_metric_history(run.info.run_id, "at_epoch/transfer/res5/top1")}
    assert sorted(hist) == [1, 3] and hist[3] == run.data.metrics["transfer/res5/top1"]
    assert [m.step for m in c.get_metric_history(run.info.run_id, "at_epoch/knn/res3/top1")] == [1, 3]
    assert "plots/over_epochs.png" in [a.path for a in c.list_artifacts(run.info.run_id, "plots")]
    folder = next(Path("runs").glob("rotation-*"))
    assert sorted(p.name for p in folder.glob("trunk*.pt")) == ["trunk.pt", "trunk_e1.pt"]
    capsys.readouterr()
    assert main(["eval", str(folder), "--set", "eval.at_epochs=[2]", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "kept no trunk after epoch 2 (kept: [1])" in err and err.count("\n") == 1
    assert main(["eval", str(folder), "--set", "eval.at_epochs=[1]", "--set", "eval.layers=[res3,res5]", "--quiet"]) == 0


def _unlabelled_tree(root: Path, n: int = 60) -> Path:
    g = torch.Generator().manual_seed(0)
    for i in range(n):  # any depth: sub-folders mean nothing in an unlabelled collection
        folder = root / ("a" if i % 2 else "a/b")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(torch.randint(0, 256, (24, 24, 3), generator=g, dtype=torch.uint8).numpy()).save(folder / f"{i}.png")
    return root


def test_unlabelled_pretraining_is_evaluated_on_another_labelled_collection(mlflow_runs, tmp_path, capsys):
    from sslray.compare import labels
    from sslray.config import DataConfig
    from sslray.data import open_sources

    root = _unlabelled_tree(tmp_path / "unl")
    train, test = open_sources(DataConfig(name="imagefolder", root=str(root), labels=False))
    assert (len(train), len(test), train.classes) == (48, 12, ["unlabelled"])  # every fifth image held out
    assert main(["train", "--method", "rotation", "--data", "imagefolder", "--root", str(root), "--epochs", "1",
                 "--set", "data.labels=false", "--set", "optim.batch_size=16", "--set", "eval.data.name=synthetic",
                 "--set", "eval.data.limit=200", "--set", "eval.data.test_limit=100", "--set", "eval.layers=[res3]",
                 "--set", "trunk.width=0.125", "--set", "eval.linear.epochs=3", "--set", "eval.feature_dim=256",
                 "--quiet"]) == 0
    c, runs = mlflow_runs()
    p, m = runs[0].data.params, runs[0].data.metrics
    assert p["data.labels"] == "False" and p["eval.data.name"] == "synthetic"
    assert_probed(m, ["transfer/res3/top1", "knn/res3/top1"])  # on synthetic's 100 test images, not the 12 of the tree
    config = {"method": "rotation", "eval": {"data": {"name": "synthetic", "root": None}}}
    assert labels([{"dir": Path("r"), "config": config}]) == ["rotation (evaluated on synthetic)"]


def test_seeds_train_one_configuration_n_times_with_one_group_and_print_intervals(mlflow_runs, capsys):
    assert _train("--method", "rotation", "--data", "synthetic", "--epochs", "1", "--seeds", "2",
                  "--set", "run.seed=5", "--set", "eval.layers=[conv1,res5]") == 0
    out = capsys.readouterr().out
    c, runs = mlflow_runs()
    assert len(runs) == 2
    assert sorted(r.data.params["seed"] for r in runs) == ["5", "6"]  # pretraining seeds differ...
    assert {r.data.params["eval.seed"] for r in runs} == {"0"}  # ...the probes' seed does not
    groups = {r.data.tags["sslray.group"] for r in runs}
    assert len(groups) == 1 and len(groups.pop()) == 12
    assert {r.data.tags["sslray.seeds"] for r in runs} == {"2"}
    row = next(line for line in out.splitlines() if line.startswith("| rotation (2 seeds) |"))
    vals = [(r.data.metrics["transfer/conv1/top1"], r.data.metrics["transfer/res5/top1"]) for r in runs]
    mean = [100 * (a + b) / 2 for a, b in zip(*vals)]
    assert row.startswith(f"| rotation (2 seeds) | {mean[0]:.1f} ± ") and f"| {mean[1]:.1f} ± " in row


@pytest.mark.parametrize("argv, phrase", [(["--seeds", "0"], "--seeds must be at least 1"),
                                          (["--seeds", "2", "--resume"], "--resume continues one run")])
def test_bad_seeds_are_one_line(argv, phrase, capsys):
    assert main(["train", "--method", "rotation", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert phrase in err and "\n" not in err
    assert not Path("runs").exists() and not Path("mlflow.db").exists()


def test_a_collapse_is_one_line_and_a_tag_and_with_stop_on_collapse_ends_the_run(mlflow_runs, capsys):
    # a threshold above any possible rank makes every epoch a collapse: the signal, not the trunk, is tested
    assert _train("--method", "rotation", "--data", "synthetic", "--epochs", "2", "--no-eval",
                  "--set", "eval.collapse_rank=1000") == 0
    out = capsys.readouterr().out
    assert out.count("collapse: rotation at epoch 1: effective rank of pooled res5 features") == 1  # said once
    c, runs = mlflow_runs()
    assert runs[0].data.tags["sslray.collapsed"].startswith("epoch 1: effective rank")
    assert _train("--method", "rotation", "--data", "synthetic", "--epochs", "2", "--no-eval",
                  "--set", "eval.collapse_rank=1000", "--set", "eval.stop_on_collapse=true") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sslray: the run collapsed: rotation collapsed at epoch 1") and "\n" not in err
    c, runs = mlflow_runs()
    assert runs[0].info.status == "FAILED"
    assert [m.step for m in c.get_metric_history(runs[0].info.run_id, "train/loss")] == [0]  # logged, then stopped


def test_resume_continues_from_the_saved_epoch_like_an_uninterrupted_run(mlflow_runs, monkeypatch):
    from sslray.tracking import RunDir

    common = ["--method", "rotation", "--no-eval", "--set", "seed=3", "--epochs", "3"]
    assert _train(*common, "--set", "output_dir=straight") == 0

    real_save = RunDir.save_checkpoint

    def save_then_crash(self, state):  # the process dies right after epoch 2's checkpoint
        real_save(self, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", save_then_crash)
    assert _train(*common, "--set", "output_dir=split") == 130
    monkeypatch.setattr(RunDir, "save_checkpoint", real_save)
    c, runs = mlflow_runs()
    killed = [r for r in runs if "split" in r.data.tags["sslray.run_dir"]][0]
    assert killed.info.status == "KILLED"
    # epoch 2 was checkpointed but never reached MLflow
    assert [m.step for m in c.get_metric_history(killed.info.run_id, "train/loss")] == [0]

    assert _train("--resume", "--method", "rotation", "--set", "output_dir=split", "--quiet") == 0
    c, runs = mlflow_runs()
    assert len(runs) == 2  # the resumed run is the same MLflow run, not a new one
    resumed = c.get_run(killed.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(resumed.info.run_id, "train/loss")] == [0, 1, 2]
    ckpt = torch.load(next(Path("split").glob("*/checkpoint.pt")), weights_only=True)
    assert ckpt["epoch"] == 3
    a = torch.load(next(Path("straight").glob("*/trunk.pt")), weights_only=True)
    b = torch.load(next(Path("split").glob("*/trunk.pt")), weights_only=True)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k


def test_baselines_run_through_the_same_path(mlflow_runs):
    assert _train("--method", "random", "--epochs", "3") == 0
    assert _train("--method", "supervised", "--epochs", "1") == 0
    c, runs = mlflow_runs()
    by = {r.data.params["method"]: r for r in runs}
    assert "train/loss" not in by["random"].data.metrics  # the floor is never trained
    assert "train/loss" in by["supervised"].data.metrics
    for r in runs:
        assert all(f"transfer/{layer}/top1" in r.data.metrics for layer in LAYERS)


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("rotation", "random", "supervised"):
        assert f"\n{name} " in "\n" + out


def _tree(root: Path, corrupt: bool = False):
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for j in range(3):
                Image.new("RGB", (32, 32), (40 * j, 0, 0)).save(root / split / c / f"{j}.png")
    if corrupt:
        (root / "train" / "a" / "1.png").write_bytes(b"\x89PNG garbage")


BAD = {
    "unknown method": (["--method", "nope"], "unknown method 'nope'"),
    "unknown key": (["--method", "rotation", "--set", "colour=3"], "unknown key 'colour'"),
    "unknown nested key": (["--method", "rotation", "--set", "optim.mommentum=3"], "optim.mommentum"),
    "invalid value": (["--method", "rotation", "--set", "optim.lr=-1"], "optim.lr"),
    "invalid method setting": (["--method", "rotation", "--set", "rotations=some"], "rotations"),
    "negative epochs": (["--method", "rotation", "--epochs", "-1"], "epochs"),
    "missing root": (["--method", "rotation", "--data", "imagefolder", "--root", "nowhere"], "nowhere"),
    "no root": (["--method", "rotation", "--data", "imagefolder"], "data.root"),
    "empty root": (["--method", "rotation", "--data", "imagefolder", "--root", "empty"], "empty"),
    "corrupt image": (["--method", "rotation", "--data", "imagefolder", "--root", "corrupt", "--set", "optim.batch_size=4"], "1.png"),
    "wrong layout": (["--method", "rotation", "--data", "imagefolder", "--root", "flat"], "wrong layout"),
    "nothing to resume": (["--method", "rotation", "--resume"], "cannot resume"),
    "bad flag": (["--method", "rotation", "--epochs", "two"], "invalid int value"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, capsys, tmp_path):
    Path("empty").mkdir()
    _tree(Path("corrupt"), corrupt=True)
    Path("flat").mkdir()
    Image.new("RGB", (8, 8)).save("flat/x.png")
    args, expected = BAD[case]
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sslray: error:") and expected in err
    assert "Traceback" not in err
    assert not Path("mlflow.db").exists() and not Path("runs").exists()


def test_a_bare_key_with_two_readings_is_refused_naming_both(capsys):
    from sslray.train.build import build_config

    assert main(["train", "--method", "multitask", "--set", "seed=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("sslray: error: ambiguous key 'seed': method 'multitask' has a setting 'seed' (write "
                   "settings.seed=...) and the run has a field 'seed' (write run.seed=...)")
    assert not Path("mlflow.db").exists() and not Path("runs").exists()
    both = build_config("multitask", {"run.seed": 3, "settings.seed": 5})
    assert both.seed == 3 and both.settings["seed"] == 5
    assert build_config("rotation", {"seed": 4}).seed == 4  # one reading only: taken


def test_console_script_error_has_no_traceback():
    r = subprocess.run([sys.executable, "-m", "sslray", "train", "--method", "nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("sslray: error: unknown method") and "Traceback" not in r.stderr


def test_imagefolder_data_trains_end_to_end(mlflow_runs):
    _tree(Path("tree"))
    assert main(["train", "--method", "supervised", "--data", "imagefolder", "--root", "tree", "--epochs", "1",
                 "--set", "trunk.width=0.125", "--set", "optim.batch_size=4", "--set", "eval.linear.epochs=2",
                 "--set", "eval.feature_dim=256", "--quiet"]) == 0
    _, runs = mlflow_runs()
    assert runs[0].data.params["data.name"] == "imagefolder" and runs[0].data.params["resolved.data.num_train"] == "6"


def test_eval_command_evaluates_a_finished_run_in_its_own_mlflow_run(mlflow_runs):
    assert _train("--method", "rotation", "--epochs", "1", "--no-eval") == 0
    c, runs = mlflow_runs()
    assert not any(k.startswith("transfer/") for k in runs[0].data.metrics)
    run_dir = next(Path("runs").glob("rotation-*"))
    assert main(["eval", str(run_dir), "--quiet"]) == 0
    c, again = mlflow_runs()
    assert len(again) == 1 and again[0].info.run_id == runs[0].info.run_id
    assert all(f"transfer/{layer}/top1" in again[0].data.metrics for layer in LAYERS)
    assert (run_dir / "per_layer.png").exists()


def _fake_run(root, name, method, settings, metrics, epochs=10, seed=0):
    import json

    import yaml
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text(yaml.safe_dump({"method": method, "settings": settings, "epochs": epochs,
                                                   "seed": seed, "run_name": name}))
    (d / "run.json").write_text(json.dumps({"method": method, "mlflow_run_id": f"id-{name}"}))
    (d / "transfer.json").write_text(json.dumps(metrics))
    return d


def test_compare_labels_runs_by_what_differs_and_tabulates_every_layer(tmp_path, capsys):
    from sslray.cli import main

    a = _fake_run(tmp_path, "a", "jigsaw", {"permutations": 100, "grid": 3},
                  {"transfer/conv1/top1": 0.4, "transfer/res5/top1": 0.231, "knn/res5/top1": 0.2,
                   "invariance/rotation/chance": 0.25, "invariance/rotation/res5/cosine": 0.84,
                   "invariance/rotation/res5/probe_top1": 0.344})
    b = _fake_run(tmp_path, "b", "jigsaw", {"permutations": 1000, "grid": 3}, {"transfer/conv1/top1": 0.5})
    c = _fake_run(tmp_path, "c", "rotation", {"k": 4}, {"transfer/res5/top1": 0.369})
    png = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "id-c", "--runs-dir", str(tmp_path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| jigsaw permutations=100 | 40.0 | 23.1 |" in out  # grid is the same: not in the label
    assert "| jigsaw permutations=1000 | 50.0 | – |" in out
    assert "| rotation | – | 36.9 |" in out  # found by its MLflow run id
    assert "| jigsaw permutations=100 | 0.84 / 34.4 |" in out and "chance 25.0 %" in out
    assert png.stat().st_size > 1000


def test_compare_aggregates_seeds_into_mean_and_t_interval_and_says_what_is_separable(tmp_path, capsys):
    from sslray.cli import main

    runs = []
    for seed, (r3, r5) in enumerate([(0.40, 0.20), (0.42, 0.25), (0.44, 0.30)]):
        runs.append(_fake_run(tmp_path, f"p100-{seed}", "jigsaw", {"permutations": 100}, seed=seed,
                              metrics={"transfer/res3/top1": r3, "transfer/res5/top1": r5, "knn/res3/top1": r3 / 2}))
    for seed, (r3, r5) in enumerate([(0.30, 0.22), (0.31, 0.23), (0.32, 0.24)]):
        runs.append(_fake_run(tmp_path, f"p24-{seed}", "jigsaw", {"permutations": 24}, seed=seed,
                              metrics={"transfer/res3/top1": r3, "transfer/res5/top1": r5, "knn/res3/top1": r3 / 2}))
    png = tmp_path / "seeds.png"
    assert main(["compare", *map(str, runs), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    # mean ± t(0.975, 2) * sd / sqrt(3): 42.0 ± 4.303 * 2.0 / 1.732 = 5.0; the seeds are one row, not rivals
    assert "| jigsaw permutations=100 (3 seeds) | 42.0 ± 5.0 | 25.0 ± 12.4 |" in out
    assert "| jigsaw permutations=24 (3 seeds) | 31.0 ± 2.5 | 23.0 ± 2.5 |" in out
    assert "| jigsaw permutations=100 (3 seeds) | 21.0 ± 2.5 |" in out  # kNN
    assert out.count("jigsaw permutations=100") == 4  # 2 table rows + 2 layer lines, never one per seed
    assert "mean ± half-width of the 95 % Student-t interval over seeds" in out
    res3 = next(line for line in out.splitlines() if line.startswith("- res3:"))
    res5 = next(line for line in out.splitlines() if line.startswith("- res5:"))
    assert "is separable above" in res3 and "permutations=100" in res3.split("separable")[0]
    assert "not separable at this budget" in res5
    assert png.stat().st_size > 1000
    # a level outside (0, 1) is one line, exit 2
    assert main(["compare", *map(str, runs), "--confidence", "1.5"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err


def test_compare_of_an_unevaluated_run_is_one_line(tmp_path, capsys):
    from sslray.cli import main

    (tmp_path / "half").mkdir()
    assert main(["compare", str(tmp_path / "half")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no transfer.json" in err and "\n" not in err
