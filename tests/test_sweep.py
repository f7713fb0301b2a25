"""Studies: validation of every shipped study, bad study files, a real sweep, its report and --resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import assert_probed

from sslray import LAYERS
from sslray.cli import main
from sslray.sweep.runner import grid_points
from sslray.sweep.study import load_study

ROOT = Path(__file__).resolve().parents[1]
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
    "baselines": False,  # the shared sweep below runs them; the others need not
}


def _write(path: Path, data) -> str:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("path", sorted((ROOT / "ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_study_validates(path):
    study = load_study(str(path))
    assert study.question and study.methods and (study.space.params or len(study.methods) > 1)
    if study.search == "grid":
        assert len(grid_points(study)) >= 2


@pytest.mark.parametrize("path", sorted((ROOT / "ablations" / "cpu").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_cpu_scale_study_validates_on_an_image_folder(path, tmp_path):
    """The CPU-scale studies run on CIFAR-10's JPEG folders (``--set data.root=...``); each must
    validate there."""
    from PIL import Image

    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for j in range(3):
                Image.new("RGB", (32, 32), (80 * j, 40, 0)).save(tmp_path / split / c / f"{j}.png")
    study = load_study(str(path), {"data.root": str(tmp_path)})
    assert study.data["name"] == "imagefolder" and study.config["trunk.width"] == 0.125
    assert study.search == "grid" and study.budget.epochs >= 5


def test_set_on_a_study_reaches_data_budget_and_dotted_config_keys():
    study = load_study("negatives", {"data.limit": 321, "budget.trials": 3, "config.trunk.width": 0.25,
                                     "name": "negatives-big"})
    assert study.data["limit"] == 321 and study.budget.trials == 3 and study.name == "negatives-big"
    assert study.config["trunk.width"] == 0.25 and study.config["eval.feature_dim"] == 4096


def test_conditional_parameters_apply_only_to_their_methods():
    study = load_study(str(ROOT / "ablations" / "invariance.yaml"))
    points = grid_points(study)
    assert {"method": "rotation"} in points and {"method": "jigsaw"} in points
    assert {"method": "pirl", "transform": "rotation"} in points and {"method": "pirl", "transform": "jigsaw"} in points
    assert len(points) == 4


BAD = {
    "malformed": ("question: [unclosed\nmethods: [rotation]\n", "malformed YAML"),
    "unknown key": ({**TINY_STUDY, "budgett": {}}, "budgett: unknown key"),
    "unknown method": ({**TINY_STUDY, "methods": ["rotation", "nope"]}, "unknown method 'nope'"),
    "unknown distribution": ({**TINY_STUDY, "params": {"optim.lr": {"gaussian": [0, 1]}}}, "params.optim.lr"),
    "empty range": ({**TINY_STUDY, "params": {"optim.lr": {"uniform": [0.5, 0.5]}}}, "empty or inverted range"),
    "inverted range": ({**TINY_STUDY, "params": {"optim.lr": {"loguniform": [1.0, 0.1]}}}, "empty or inverted range"),
    "empty choice": ({**TINY_STUDY, "params": {"optim.lr": {"choice": []}}}, "empty choice"),
    "not a setting": ({**TINY_STUDY, "params": {"temperature": {"choice": [0.1]}}}, "params.temperature"),
    "bad value": ({**TINY_STUDY, "config": {"optim.momentum": 2}}, "optim.momentum"),
    "no seeds": ({**TINY_STUDY, "budget": {"seeds": 0}}, "budget.seeds"),
    "confidence outside (0, 1)": ({**TINY_STUDY, "report": {"confidence": 1.5}}, "report.confidence"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_is_one_line_naming_file_and_key(case, capsys, tmp_path):
    data, expected = BAD[case]
    path = _write(tmp_path / "study.yaml", data)
    assert main(["sweep", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "study.yaml" in err and expected in err, err
    assert not Path("mlflow.db").exists()


def test_budget_that_cannot_fit_the_cluster_is_refused_before_mlflow(capsys, tmp_path):
    import ray

    path = _write(tmp_path / "big.yaml", {**TINY_STUDY, "budget": {"cpus_per_trial": 64}})
    try:
        assert main(["sweep", path]) == 2
    finally:
        ray.shutdown()
    err = capsys.readouterr().err.strip()
    assert "needs 64 CPUs per trial" in err and err.count("\n") == 0
    assert not Path("mlflow.db").exists()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """One real two-trial study, shared by the tests that read it back."""
    import ray

    folder = tmp_path_factory.mktemp("tiny-sweep")
    old = os.getcwd()
    os.chdir(folder)
    try:
        path = _write(folder / "lr.yaml", {**TINY_STUDY, "baselines": True})
        assert main(["sweep", path, "--quiet"]) == 0
    finally:
        ray.shutdown()
        os.chdir(old)
    return folder


def test_sweep_logs_a_parent_and_one_child_per_trial_and_report_answers(tiny_sweep, monkeypatch, capsys, mlflow_runs):
    from sslray.tracking.store import KIND_TAG, TRAINING_KIND
    from sslray.tracking.ui import compare_url, runs_url

    monkeypatch.chdir(tiny_sweep)
    monkeypatch.delenv("SSLRAY_UI_URL", raising=False)
    c, runs = mlflow_runs("lr")
    parents = [r for r in runs if r.data.tags.get("sslray.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    assert sorted(float(r.data.params["optim.lr"]) for r in children) == [0.05, 0.2]
    for r in children:
        assert r.data.tags["sslray.stop_reason"] == "completed" and r.info.status == "FINISHED"
        assert r.data.tags["sslray.study"] == "lr"
        assert_probed(r.data.metrics, [f"transfer/{layer}/top1" for layer in LAYERS], n_test=100)
        assert [m.step for m in c.get_metric_history(r.info.run_id, "train/loss")] == [0]
    p = parents[0]
    assert p.data.params["question"].startswith("Does the learning rate")
    assert p.data.params["budget.epochs"] == "1" and p.data.params["swept"] == "optim.lr"
    best = max(children, key=lambda r: r.data.metrics["transfer/res3/top1"])
    assert c.get_run(p.info.run_id).data.tags["sslray.best_run"] == best.info.run_id

    # floor and ceiling: random and supervised at the study's data, trunk and evaluation settings
    tags = c.get_run(p.info.run_id).data.tags
    floor, ceiling = c.get_run(tags["sslray.floor_run"]), c.get_run(tags["sslray.ceiling_run"])
    assert floor.data.params["method"] == "random" and floor.data.params["epochs"] == "0"
    assert ceiling.data.params["method"] == "supervised" and ceiling.data.params["epochs"] == "1"
    for b in (floor, ceiling):
        assert b.info.status == "FINISHED" and b.data.params["trunk.width"] == "0.125"
        assert_probed(b.data.metrics, [f"transfer/{layer}/top1" for layer in LAYERS], n_test=100)
        assert b.data.params["data.limit"] == "200" and b.data.params["eval.linear.epochs"] == "3"
    # a second study with the same settings reuses them: nothing runs, the same two runs come back
    from sslray.sweep.baselines import EXPERIMENT, ensure_baselines
    from sslray.sweep.study import load_study
    from sslray.tracking import Store

    again, problems = ensure_baselines(load_study("lr.yaml", {"name": "other", "baselines": True}), Store(),
                                       tiny_sweep / "runs" / "sweeps" / "lr")
    assert again == {"random": floor.info.run_id, "supervised": ceiling.info.run_id} and problems == []
    assert len(mlflow_runs(EXPERIMENT)[1]) == 2

    capsys.readouterr()
    assert main(["report", "lr"]) == 0
    out = capsys.readouterr().out
    assert "objective: max transfer/res3/top1" in out and f"{100 * best.data.metrics['transfer/res3/top1']:.1f}%" in out
    floor_row = next(line for line in out.splitlines() if "(floor)" in line)
    assert floor_row.split()[0] == "random" and f"{100 * floor.data.metrics['transfer/res3/top1']:.1f}" in floor_row
    assert any(line.split()[:2] == ["supervised", "(ceiling)"] for line in out.splitlines())
    assert out.startswith("study lr") and "answer (transfer/res3/top1): " in out and "both have one seed" in out
    assert out.count("rotation") >= 2
    for fig in ("metric_vs_swept.png", "per_layer_best.png"):
        assert (Path("reports/lr") / fig).read_bytes()[:4] == b"\x89PNG"
    assert {a.path for a in c.list_artifacts(p.info.run_id, "report")} == {"report/metric_vs_swept.png",
                                                                          "report/per_layer_best.png"}
    # the study's experiment is marked as training (MLflow's kind tag); report prints where to look
    exp = p.info.experiment_id
    assert c.get_experiment(exp).tags[KIND_TAG] == TRAINING_KIND
    ui = "http://127.0.0.1:5000"
    assert f"MLflow runs: {runs_url(ui, exp, 'lr', 'max transfer/res3/top1')}\n" in out
    compare = next(line for line in out.splitlines() if line.startswith("MLflow compare: "))
    ids = [r.info.run_id for r in children]
    assert compare.removeprefix("MLflow compare: ") in (compare_url(ui, ids, [exp]), compare_url(ui, ids[::-1], [exp]))


def test_report_labels_every_stop_reason():
    from sslray.sweep.stops import Stop, StopReason, failure

    reasons = [StopReason(Stop.COMPLETED), failure(FloatingPointError("loss is nan at epoch 1\nmore")),
               StopReason(Stop.EARLY_STOPPED, 2), StopReason(Stop.INTERRUPTED, 1)]
    assert [r.label() for r in reasons] == ["done", "failed", "ASHA@2", "stopped"]
    assert [r.text() for r in reasons] == ["completed", "failed: FloatingPointError: loss is nan at epoch 1",
                                           "early-stopped by ASHA after epoch 2",
                                           "stopped after epoch 1 (the sweep was interrupted)"]
    for r in reasons:  # what the runner writes on a trial's run, the report reads back
        assert StopReason.of(r.tags()) == r
    assert StopReason.of({}) is None


def test_a_long_search_space_is_stored_whole_and_reports(tmp_path, capsys):
    # 200 choices: more than the 5,000 characters an MLflow param holds once written as JSON
    from sslray.sweep.runner import _parent_run
    from sslray.sweep.study import STUDY_ARTIFACT, Study
    from sslray.tracking import Store

    lrs = [round(0.001 * (i + 1), 4) for i in range(200)]
    study = load_study(_write(tmp_path / "long.yaml", {**TINY_STUDY, "search": "tpe",
                                                       "params": {"optim.lr": {"choice": lrs}}}))
    store = Store()
    parent = _parent_run(study, resume=False, store=store)
    back = Study.model_validate_json(store.read_text(parent, STUDY_ARTIFACT))
    assert back == study and back.space.params["optim.lr"].choice == lrs
    assert main(["report", "long", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "study long: Does the learning rate matter" in out and "trials: 0" in out


def test_report_of_an_unknown_study_is_one_line(capsys):
    assert main(["report", "never-ran"]) == 2
    assert "no study 'never-ran'" in capsys.readouterr().err


def test_resume_after_the_driver_dies_finishes_only_missing_trials(tmp_path, mlflow_runs):
    lrs = [0.02, 0.05, 0.1, 0.2, 0.3, 0.4]  # enough trials, one at a time, for the interrupt to land mid-sweep
    study = {**TINY_STUDY, "params": {"optim.lr": {"grid": lrs}},
             "budget": {"trials": 1, "epochs": 2, "cpus_per_trial": 1, "max_concurrent": 1}}
    path = _write(tmp_path / "res.yaml", study)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "sslray", "sweep", path, "--quiet"]
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    # wait until one trial is completed, then interrupt the driver like a Ctrl-C / lost terminal
    deadline = time.time() + 400
    trials = tmp_path / "runs" / "sweeps" / "res" / "trials"
    while time.time() < deadline and not list(trials.glob("*/transfer.json")):  # a trial has been evaluated
        time.sleep(0.5)
    time.sleep(1)  # let it report
    os.killpg(driver.pid, signal.SIGINT)
    driver.wait(180)
    _, before = mlflow_runs("res")
    done_before = {r.info.run_id for r in before if r.data.tags.get("sslray.stop_reason") == "completed"}
    assert 1 <= len(done_before) < len(lrs)

    r = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    c, runs = mlflow_runs("res")
    children = [x for x in runs if x.data.tags.get("sslray.role") == "trial"]
    assert len(children) == len(lrs)  # exactly one child per trial
    assert sorted(float(x.data.params["optim.lr"]) for x in children) == lrs
    assert all(x.data.tags["sslray.stop_reason"] == "completed" for x in children)
    for x in children:  # each epoch logged once, resumed trials included
        assert [m.step for m in c.get_metric_history(x.info.run_id, "train/loss")] == [0, 1]
    for run_id in done_before:  # completed trials were not re-run
        assert len(c.get_metric_history(run_id, "train/loss")) == 2


def test_a_user_walks_from_the_mlflow_home_page_to_the_per_layer_metrics_of_a_study(tiny_sweep, monkeypatch, mlflow_runs,
                                                                                     tmp_path, capsys):
    """README's path in headless Chromium: the server `sslray ui` starts, its home page, the study's
    experiment by name (on its runs table, not the GenAI overview), the trial rows, tick them,
    *Compare*, every layer's metric; then the addresses `sslray report` prints, each trial's
    per-layer figure and the study's figures as artifacts. A failed step leaves its screenshot and
    page source in test-artifacts/mlflow-ui/; SSLRAY_DOCS_SHOTS=1 also writes docs/mlflow_compare.png."""
    import json
    from urllib.parse import parse_qs, unquote, urlsplit

    from _browser import Browser, chromium_or_skip, free_port, mlflow_ui

    chromium, chromedriver = chromium_or_skip()
    monkeypatch.chdir(tiny_sweep)
    _, runs = mlflow_runs("lr")
    parent = next(r for r in runs if r.data.tags.get("sslray.role") == "study")
    trials = sorted(r.info.run_name for r in runs if r.data.tags.get("sslray.role") == "trial")
    assert len(trials) == 2 and all(t.startswith("trial-") for t in trials) and parent.info.run_name == "study-lr"
    port = free_port()
    monkeypatch.setenv("SSLRAY_UI_URL", f"http://127.0.0.1:{port}")
    assert main(["report", "lr", "--out", str(tmp_path / "reports")]) == 0  # its figures go to the study run
    printed = dict(line.removeprefix("MLflow ").split(": ", 1) for line in capsys.readouterr().out.splitlines()
                   if line.startswith("MLflow "))  # {"runs": address, "compare": address}

    def run_ids(url: str) -> set[str]:
        return set(json.loads(unquote(parse_qs(urlsplit(url).fragment.partition("?")[2])["runs"][0])))

    def row(name: str) -> str:  # the runs table's row of a run, by its name
        return f"//div[@role='row'][.//a[normalize-space()='{name}']]"

    with mlflow_ui(port, tmp_path / "mlflow-ui.log") as home:
        b = Browser(chromium, chromedriver, tmp_path / "chrome", ROOT / "test-artifacts" / "mlflow-ui")
        try:
            with b.step("home"):
                b.driver.get(home + "/")
                b.find("//a[normalize-space()='lr']", "the experiment 'lr' listed on the home page")
                for close in b.driver.find_elements("xpath", "//button[@data-component-id='mlflow.assistant.chat_panel.close']"):
                    close.click()  # the assistant panel opens itself on a first visit; a user closes it
            with b.step("model training"):  # MLflow 3.17 opens experiments on the switch's side: GenAI unless told
                b.click("//div[@role='button'][normalize-space()='Model training']", "the sidebar's workflow switch")
            with b.step("experiment"):
                b.click("//a[normalize-space()='lr']", "the experiment 'lr'")
                b.wait(lambda d: "/runs" in d.current_url or "/overview" in d.current_url, "the experiment's page")
                assert "/overview" not in b.driver.current_url, "the study opened on MLflow's GenAI overview"
                b.find(row("study-lr"), "the study's run in the runs table")
                page = b.text()
                assert not any(genai in page for genai in ("Token Usage", "Detect Issues")), "GenAI panels shown"
            with b.step("trials"):  # a study's trials are nested under its run, which a user expands
                b.click(row("study-lr") + "//div[@col-id='attributes.`Run Name`']//button", "the study run's expander")
                for t in trials:
                    b.find(row(t), f"the trial row {t}")
            with b.step("select"):
                for t in trials:
                    b.click(row(t) + "//div[contains(@class, 'ag-selection-checkbox')]//input", f"the checkbox of {t}",
                            shown=False)  # ag-grid draws its own box over the (transparent) input
                b.wait(lambda d: d.find_element("css selector", "[data-testid='runs-compare-button']").is_enabled(),
                       "the Compare button")
            with b.step("compare"):
                b.driver.find_element("css selector", "[data-testid='runs-compare-button']").click()
                b.wait(lambda d: "/compare-runs" in d.current_url, "the compare view")
                assert run_ids(b.driver.current_url) == run_ids(printed["compare"]), "not the trials `report` prints"
                # labels of the Metrics table's rows, any of them a landmark while the wheel turns
                metrics = "//a[contains(normalize-space(), '/top1') or starts-with(normalize-space(), 'transfer/')]"
                for layer in LAYERS:  # the Metrics table scrolls in its own box: down to each layer's row
                    row_label = f"//a[normalize-space()='transfer/{layer}/top1']"
                    b.wheel_to(row_label, metrics, f"the row transfer/{layer}/top1")
                    b.find(row_label, f"transfer/{layer}/top1 on screen", timeout=10)
                b.driver.save_screenshot(str(tmp_path / "compare.png"))
                if os.environ.get("SSLRAY_DOCS_SHOTS"):  # README's picture, made here: a small palette PNG
                    from PIL import Image

                    Image.open(tmp_path / "compare.png").convert("P", palette=Image.ADAPTIVE, colors=64).save(
                        ROOT / "docs" / "mlflow_compare.png", optimize=True)
            with b.step("printed runs address"):  # `sslray report`'s address: the study's runs, flat, best first
                b.driver.get(printed["runs"])
                for name in [*trials, "study-lr"]:
                    b.find(row(name), f"the row {name} without expanding anything")
                assert "/overview" not in b.driver.current_url and "Token Usage" not in b.text()
            with b.step("trial figure"):
                b.click(f"//a[normalize-space()='{trials[0]}']", f"the run {trials[0]}")
                b.click("//button[@role='tab'][normalize-space()='Artifacts']", "the run's Artifacts tab")
                b.click("//*[normalize-space(text())='plots']", "the folder plots")
                b.click("//*[normalize-space(text())='per_layer.png']", "plots/per_layer.png")
                b.find("//*[contains(text(), 'plots/per_layer.png')]", "the preview of plots/per_layer.png")
                b.wait(lambda d: b.image_shown(), "the per-layer figure drawn")
            with b.step("study figures"):
                b.driver.get(printed["runs"])
                b.click("//a[normalize-space()='study-lr']", "the study run")
                b.click("//button[@role='tab'][normalize-space()='Artifacts']", "the study run's Artifacts tab")
                b.click("//*[normalize-space(text())='report']", "the folder report")
                for fig in ("metric_vs_swept.png", "per_layer_best.png"):
                    b.click(f"//*[normalize-space(text())='{fig}']", f"report/{fig}")
                    b.find(f"//*[contains(text(), 'report/{fig}')]", f"the preview of report/{fig}")
                    b.wait(lambda d: b.image_shown(), f"report/{fig} drawn")
        finally:
            b.quit()


def test_asha_on_the_knn_monitor_stops_trials_before_their_evaluation(tmp_path, mlflow_runs):
    import ray

    study = {**TINY_STUDY, "search": "tpe", "params": {"optim.lr": {"loguniform": [0.001, 0.5]}},
             "budget": {"trials": 4, "epochs": 2, "cpus_per_trial": 1},
             "early_stopping": {"metric": "monitor/knn_top1", "mode": "max", "grace_epochs": 1}}
    path = _write(tmp_path / "asha.yaml", study)
    try:
        assert main(["sweep", path, "--quiet"]) == 0
    finally:
        ray.shutdown()
    c, runs = mlflow_runs("asha")
    children = [r for r in runs if r.data.tags.get("sslray.role") == "trial"]
    assert len(children) == 4 and len({r.data.params["optim.lr"] for r in children}) == 4  # TPE sampled 4 points
    for r in children:
        monitor = c.get_metric_history(r.info.run_id, "monitor/knn_top1")
        assert monitor and all(0 <= m.value <= 1 for m in monitor)  # the proxy ASHA ranks trials on
        reason = r.data.tags["sslray.stop_reason"]
        if reason == "completed":
            assert len(monitor) == 2 and "transfer/res3/top1" in r.data.metrics
        else:  # stopped at a rung: never evaluated, so Optuna gets no objective (a pruned trial)
            assert reason.startswith("early-stopped by ASHA after epoch 1") and r.info.status == "KILLED"
            assert "transfer/res3/top1" not in r.data.metrics
    assert any(r.data.tags["sslray.stop_reason"] == "completed" for r in children)


def test_report_plots_invariance_per_transform_and_one_curve_per_variant(tmp_path, capsys):
    from sslray.sweep.report import _plots, _print_invariance

    def row(method, swept, top, probe):
        return {"run": method, "trial": "t", "method": method, "reason": "completed", "swept": swept, "objective": top,
                "transfer": {layer: top for layer in LAYERS}, "knn_top1": {layer: None for layer in LAYERS},
                "invariances": {("rotation", None, "chance"): 0.25,
                                **{("rotation", layer, "probe_top1"): probe for layer in LAYERS}}}
    rows = [row("rotation", {}, 0.35, 0.48), row("pirl", {"settings.transform": "rotation"}, 0.33, 0.41),
            row("pirl", {"settings.transform": "jigsaw"}, 0.32, 0.38), row("rotation", {}, 0.35, 0.50)]
    figs = _plots("inv", rows, None, tmp_path, ["transfer", "knn", "invariance"])
    assert [f.name for f in figs] == ["per_layer_best.png", "invariance.png"]  # no swept x: no metric-vs-x figure
    _print_invariance(rows)
    out = capsys.readouterr().out
    assert "invariance to rotation: probe top-1 predicting it (chance 25 %)" in out
    assert "pirl transform=jigsaw" in out and "38.0" in out
    # two seeds of rotation are one row: their mean with its interval (t(0.975, 1) x sd / sqrt 2 = 12.7)
    assert "rotation (2)" in out and "49.0 ± 12.7" in out and "48.0" not in out
    figs = _plots("neg", rows, "settings.transform", tmp_path / "x")
    assert [f.name for f in figs] == ["metric_vs_swept.png", "per_layer_best.png"]  # only pirl has the x


def test_a_diverging_trial_is_recorded_as_failed_with_its_error(tmp_path, monkeypatch, mlflow_runs, capsys):
    import ray

    monkeypatch.chdir(tmp_path)
    # the second configuration's loss turns NaN at its second step (debug.nan_at), as a diverging one's does
    study = {**TINY_STUDY, "params": {"debug.nan_at": {"grid": [None, [0, 1]]}}}
    try:
        assert main(["sweep", _write(tmp_path / "div.yaml", study), "--quiet"]) == 0
    finally:
        ray.shutdown()
    _, runs = mlflow_runs("div")
    reasons = {r.data.params["debug.nan_at"]: r.data.tags["sslray.stop_reason"]
               for r in runs if r.data.tags.get("sslray.role") == "trial"}
    assert reasons["None"] == "completed"
    assert reasons["0,1"].startswith("failed: FloatingPointError: loss is nan") and "at epoch 1" in reasons["0,1"]
    capsys.readouterr()
    assert main(["report", "div", "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "FloatingPointError" in out


def test_interrupting_only_the_driver_stops_the_sweep_promptly(tmp_path):
    # a SIGINT to the driver alone (not its process group, as `kill -INT` sends it) in the middle of
    # a long epoch: the trial is stopped inside that epoch, not after it (no checkpoint, no loss, no
    # evaluation), the driver exits on its own, and MLflow records the trial as interrupted after 0
    # epochs. The waits below only guard against a hang; nothing is timed.
    study = {**TINY_STUDY, "data": {"name": "synthetic", "limit": 4000, "test_limit": 100},
             "config": {**TINY_STUDY["config"], "trunk.width": 1.0},  # an epoch of minutes on a CPU
             "budget": {"trials": 1, "epochs": 2, "cpus_per_trial": 1}}
    path = _write(tmp_path / "long.yaml", study)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen([sys.executable, "-m", "sslray", "sweep", path, "--quiet"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    trials = tmp_path / "runs" / "sweeps" / "long" / "trials"
    try:
        deadline = time.time() + 400
        while time.time() < deadline and not list(trials.glob("*/run.json")):  # a trial has started
            time.sleep(0.5)
        assert list(trials.glob("*/run.json")), "no trial started"
        time.sleep(5)  # into its first epoch
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=400)  # a hang guard: the epoch alone takes longer than this
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130, err[-3000:]  # interrupted is not success (reliability round two, 14)
    assert "Traceback" not in err and "answer:" not in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("sslray: sweep of study long interrupted"), err[-500:]
    assert last.endswith((f"finish it with: sslray sweep {path} --resume",  # Tune had saved its state
                          f"nothing was saved to resume; run it again: sslray sweep {path}")), last
    assert not list(trials.glob("*/checkpoint.pt"))  # it was stopped mid-epoch, not after one
    assert not list(trials.glob("*/transfer.json"))  # and never evaluated
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("long").experiment_id])
    trial, = [r for r in runs if r.data.tags.get("sslray.role") == "trial"]
    parent, = [r for r in runs if r.data.tags.get("sslray.role") == "study"]
    assert trial.info.status == "KILLED" and parent.info.status == "KILLED"
    assert (trial.data.tags["sslray.stop"], trial.data.tags["sslray.stop_epoch"]) == ("interrupted", "0")
    assert trial.data.tags["sslray.stop_reason"] == "stopped after epoch 0 (the sweep was interrupted)"
    assert c.get_metric_history(trial.info.run_id, "train/loss") == []
    assert "sslray.best_run" not in parent.data.tags


class _Trial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config = trial_id, config


def test_asha_with_seeds_decides_on_the_mean_of_a_configurations_seeds():
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search.repeater import TRIAL_INDEX

    from sslray.sweep.runner import SeedMeanASHA

    asha = SeedMeanASHA(time_attr="epoch", metric="m", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    # configuration a: seeds score 0.9 and 0.1 at epoch 1 (mean 0.5); configuration b: 0.6 and 0.6
    trials = {f"{c}{i}": _Trial(f"{c}{i}", {"lr": c, TRIAL_INDEX: i}) for c in "ab" for i in range(2)}
    for t in trials.values():
        asha.on_trial_add(None, t)
    decide = {t: asha.on_trial_result(None, trials[t], {"epoch": 1, "m": v})
              for t, v in [("b0", 0.6), ("b1", 0.6), ("a0", 0.9), ("a1", 0.1)]}
    # a0 alone (0.9) would beat b's 0.6; judged on a's mean so far (0.9 when it arrives) it goes on,
    # and a1 is judged on a's mean of both seeds, 0.5, below b: stopped, although a plain ASHA sees 0.1
    assert decide["a0"] == TrialScheduler.CONTINUE
    assert decide["a1"] == TrialScheduler.STOP
    assert asha._rung_values[next(k for k in asha._rung_values if '"a"' in k)][1] == {"a0": 0.9, "a1": 0.1}


def test_the_searcher_hears_one_mean_per_configuration_and_none_when_no_seed_finished():
    from ray.tune.search import Searcher

    from sslray.sweep.runner import SeedMeanRepeater

    class Inner(Searcher):
        def __init__(self):
            super().__init__(metric="objective", mode="max")
            self.told, self.n = [], 0

        def suggest(self, trial_id):
            self.n += 1
            return {"lr": self.n}

        def on_trial_complete(self, trial_id, result=None, error=False):
            self.told.append((trial_id, result))

    inner = Inner()
    rep = SeedMeanRepeater(inner, repeat=3)
    configs = [rep.suggest(f"t{i}") for i in range(6)]
    assert [c["lr"] for c in configs] == [1, 1, 1, 2, 2, 2]
    for i, v in enumerate([0.2, None, 0.4]):  # one seed stopped early: the mean of the other two
        rep.on_trial_complete(f"t{i}", {"objective": v} if v is not None else {"epoch": 1})
    for i in range(3, 6):
        rep.on_trial_complete(f"t{i}", {"epoch": 1})
    assert inner.told[0][0] == "t0" and inner.told[0][1]["objective"] == pytest.approx(0.3)
    assert inner.told[1] == ("t3", None)  # Optuna records PRUNED, not NaN


def test_a_seeded_grid_study_groups_seeds_and_reports_intervals(tmp_path, monkeypatch, capsys, mlflow_runs):
    import ray

    monkeypatch.chdir(tmp_path)
    study = {**TINY_STUDY, "name": "seeded", "budget": {"trials": 1, "epochs": 1, "cpus_per_trial": 1, "seeds": 2}}
    try:
        assert main(["sweep", _write(tmp_path / "seeded.yaml", study), "--quiet"]) == 0
    finally:
        ray.shutdown()
    c, runs = mlflow_runs("seeded")
    trials = [r for r in runs if r.data.tags.get("sslray.role") == "trial"]
    assert len(trials) == 4
    by_group = {}
    for r in trials:
        by_group.setdefault(r.data.tags["sslray.group"], []).append(r)
    assert len(by_group) == 2  # two learning rates, two seeds each
    for group in by_group.values():
        assert len({r.data.params["optim.lr"] for r in group}) == 1
        assert sorted(r.data.params["seed"] for r in group) == ["0", "1"]
        assert sorted(r.data.tags["sslray.seed_index"] for r in group) == ["0", "1"]
    capsys.readouterr()
    assert main(["report", "seeded"]) == 0
    out = capsys.readouterr().out
    assert "mean ± half-width of the 95 % Student-t interval over seeds" in out
    # each configuration by hand: mean ± t(0.975, 1) s / sqrt(2), t(0.975, 1) = tan(0.475 pi) (df 1: Cauchy)
    t975 = math.tan(0.475 * math.pi)
    by_hand = {}
    for group in by_group.values():
        a, b = (r.data.metrics["transfer/res3/top1"] for r in group)
        mean, sd = (a + b) / 2, abs(a - b) / math.sqrt(2)
        lr = float(group[0].data.params["optim.lr"])
        by_hand[f"rotation lr={lr:.3g}"] = (mean, t975 * sd / math.sqrt(2))
        row = next(line for line in out.splitlines() if line.startswith("rotation") and f"lr={lr:.3g} " in line)
        assert f"{100 * mean:.1f} ± {100 * t975 * sd / math.sqrt(2):.1f}" in row and "  2 " in row
    (best, (m1, h1)), (second, (m2, h2)) = sorted(by_hand.items(), key=lambda kv: -kv[1][0])
    answer = next(line for line in out.splitlines() if line.startswith("answer (transfer/res3/top1): "))
    first, runner_up = f"{best} ({100 * m1:.1f} ± {100 * h1:.1f})", f"{second} ({100 * m2:.1f} ± {100 * h2:.1f})"
    verdict = (f"{first} and {runner_up}: intervals overlap, not separable at this budget" if m1 - h1 <= m2 + h2
               else f"{first} is separable above {runner_up}")
    assert answer == f"answer (transfer/res3/top1): {verdict} (95 % Student-t intervals over seeds)"
    assert (tmp_path / "reports" / "seeded" / "per_layer_best.png").stat().st_size > 1000


def test_a_study_stops_collapsed_trials_and_reports_them(tmp_path, monkeypatch, capsys):
    import ray

    monkeypatch.chdir(tmp_path)
    # a threshold above any rank: every trial collapses at its first epoch, of two
    study = {**TINY_STUDY, "name": "coll", "budget": {"trials": 1, "epochs": 2, "cpus_per_trial": 1},
             "config": {**TINY_STUDY["config"], "eval.collapse_rank": 1000}}
    try:
        assert main(["sweep", _write(tmp_path / "coll.yaml", study), "--quiet"]) == 0
    finally:
        ray.shutdown()
    capsys.readouterr()
    assert main(["report", "coll"]) == 0
    out = capsys.readouterr().out
    assert out.count("coll@1") == 2 and "best:" not in out


def test_report_draws_the_objective_one_line_per_variant_against_a_named_source(tmp_path):
    """The label-noise study's figure: x is a source named with a query, one line per method."""
    from sslray.sweep.figures import _fmt, _pairs, _plots

    rows = []
    for method, extra in (("pretrained", {}), ("distill", {"targets": "classifier"}), ("clusterfit", {})):
        for i, p in enumerate((0.0, 0.5)):
            rows.append({"method": method, "swept": {"source": f"latest:supervised?label_noise={p}", **extra,
                                                      "clusters": None},
                         "transfer": {layer: 0.1 + 0.01 * i for layer in LAYERS}})
    figures = _plots("ln", rows, "source", tmp_path, metric="transfer/res4/top1")
    assert {f.name for f in figures} >= {"metric_vs_swept.png", "objective_by_variant.png"}
    assert (tmp_path / "objective_by_variant.png").read_bytes()[:4] == b"\x89PNG"
    assert _pairs(rows[2]["swept"]) == ["source=label_noise=0.0", "targets=classifier"]  # None: not applicable
    assert _fmt("/tmp/x/runs/sweeps/label_noise/trials") == "trials" and _fmt(0.25) == "0.25"


def test_relative_paths_of_a_study_are_anchored_where_it_is_launched(tmp_path, monkeypatch):
    from sslray.sweep.study import _anchored

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "trials").mkdir(parents=True)
    assert _anchored("runs/trials") == str(tmp_path / "runs" / "trials")
    assert _anchored("latest:supervised?label_noise=0.5") == "latest:supervised?label_noise=0.5"
    assert _anchored("nowhere/else") == "nowhere/else" and _anchored(0.5) == 0.5


def test_report_draws_transfer_against_pretext_epochs_with_intervals_over_seeds(tmp_path):
    from types import SimpleNamespace as NS

    from sslray.sweep.figures import _over_epochs

    histories, children = {}, []
    for i, (method, seed) in enumerate((("rotation", 0), ("rotation", 1), ("jigsaw", 0))):
        run_id = f"r{i}"
        for layer in LAYERS:
            histories[(run_id, f"at_epoch/transfer/{layer}/top1")] = [NS(step=e, value=0.1 * e + 0.01 * seed)
                                                                      for e in (1, 2, 4)]
        histories[(run_id, "train/acc")] = [NS(step=e, value=0.2 + 0.1 * e) for e in range(4)]
        children.append(NS(info=NS(run_id=run_id), data=NS(params={"method": method}, metrics={})))
    store = NS(history=lambda run_id, key: histories.get((run_id, key), []))
    path = _over_epochs("pe", children, store, tmp_path, 0.95)
    assert path == tmp_path / "over_epochs.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_report_tabulates_fine_tuning_and_low_shot_with_seeds_as_one_row_beside_the_floor(capsys):
    """A study that asked for finetune and lowshot gets their tables: a configuration's seeds are
    one row (mean ± interval), the floor and ceiling beside them, subsets ordered by their size."""
    from sslray.sweep.report import _print_protocols

    def metrics(ft, shot):
        out = {"finetune/top1": ft}
        for s, n, scale in (("10pct", 500, 2), ("1pct", 50, 1)):
            out.update({f"lowshot/{s}/images": n, f"lowshot/{s}/finetune/top1": scale * shot})
            out.update({f"lowshot/{s}/linear/{layer}/top1": scale * shot + 0.01 * i for i, layer in enumerate(LAYERS)})
        return out

    rows = [{"method": "simclr", "swept": {}, "protocols": metrics(ft, 0.1)} for ft in (0.40, 0.44)]
    rows.append({"method": "rotation", "swept": {}, "protocols": metrics(0.30, 0.15)})
    _print_protocols(rows, {("random", "floor"): metrics(0.20, 0.05)}, 0.95)
    out = capsys.readouterr().out.splitlines()
    head = next(i for i, line in enumerate(out) if line.startswith("fine-tuning"))
    assert "1pct (50 labelled images), 10pct (500 labelled images)" in out[head]  # smallest subset first
    assert out[head + 1].split() == ["all", "labels", "1pct", "10pct"]
    simclr = out[head + 2].split()
    # two seeds of 40 and 44: mean 42, half-width t(0.975, 1) * sd / sqrt(2) = 12.706 * 2.83 / 1.41 = 25.4
    assert simclr[:5] == ["simclr", "(2)", "42.0", "±", "25.4"] and simclr[5:] == ["10.0", "±", "0.0", "20.0", "±", "0.0"]
    assert out[head + 3].split() == ["rotation", "30.0", "15.0", "30.0"]
    assert out[head + 4].split() == ["random", "(floor)", "20.0", "5.0", "10.0"]
    low = out.index(next(line for line in out if line.startswith("low-shot 1pct")))
    assert out[low + 1].split() == list(LAYERS)
    assert out[low + 3].split() == ["rotation", "15.0", "16.0", "17.0", "18.0", "19.0"]
    assert any(line.startswith("low-shot 10pct (500 labelled images)") for line in out)


def test_report_prints_no_protocol_tables_for_a_study_that_asked_for_none(capsys):
    from sslray.sweep.report import _print_protocols

    _print_protocols([{"method": "rotation", "swept": {}, "protocols": {}}], {("random", "floor"): {"transfer/res2/top1": 0.3}})
    assert capsys.readouterr().out == ""


def test_report_says_which_collection_the_numbers_are_on():
    from sslray.sweep.report import evaluated_on

    assert evaluated_on({"data.name": "imagefolder", "data.root": "/d/cifar10", "eval.data.name": "None"}) == \
        "imagefolder cifar10"
    assert evaluated_on({"data.name": "synthetic", "data.root": "None", "eval.data.name": "imagefolder",
                         "eval.data.root": "/d/cifar10"}) == "imagefolder cifar10 (eval.data)"
    assert evaluated_on({"data.name": "synthetic"}) == "synthetic"


def test_report_tabulates_what_the_neighbours_share_with_seeds_as_one_row_and_draws_it(capsys, tmp_path):
    """Retrieval on clips records the pose and the background: the report's table at a layer has a
    column per factor (class first, then the pose), seeds as one row, the floor beside; the figure
    has a panel per factor."""
    from sslray.sweep.shares import print_shares, shares_figure

    def metrics(pose, bg):
        out = {}
        for i, layer in enumerate(LAYERS):
            out.update({f"retrieval/{layer}/precision_at_8": 0.2 + 0.01 * i, f"retrieval/{layer}/shares/swing": pose,
                        f"retrieval/{layer}/shares/bg_hue": bg, f"retrieval/{layer}/shares/x": 0.1})
        return out

    groups = {"shuffle_learn": [metrics(0.30, 0.10), metrics(0.34, 0.12)], "rotation": [metrics(0.05, 0.5)]}
    factors = print_shares(groups, {("random", "floor"): metrics(0.0, 0.8)}, "res4", 0.95)
    assert factors == ["class", "swing", "x", "bg_hue"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("what the 8 nearest training images share with a test query at res4")
    assert out[1].split() == ["class", "swing", "x", "bg", "colour"]  # class first, then the pose
    # two seeds of 30 and 34: mean 32, half-width 12.706 * 2.83 / 1.41 = 25.4
    assert out[2].split()[:8] == ["shuffle_learn", "(2)", "23.0", "±", "0.0", "32.0", "±", "25.4"]
    assert out[3].split() == ["rotation", "23.0", "5.0", "10.0", "50.0"]
    assert out[4].split() == ["random", "(floor)", "23.0", "0.0", "10.0", "80.0"]
    path = shares_figure("video", groups, {("random", "floor"): metrics(0.0, 0.8)}, tmp_path, 0.95)
    assert path == tmp_path / "shares.png" and path.stat().st_size > 10_000
    assert print_shares({"rotation": [{"retrieval/res4/precision_at_8": 0.3}]}, {}, "res4") == []  # no factors: no table


def test_a_multi_worker_trial_asks_tune_for_a_driver_not_for_nothing():
    """A trial of several Ray Train workers holds only what drives them (Tune refuses a trial that
    asks for nothing: the sweep used to end in a traceback)."""
    from ray import tune

    from sslray.sweep.runner import DRIVER_CPU, trial_resources
    from sslray.sweep.study import Budget

    assert trial_resources(Budget(workers_per_trial=1, cpus_per_trial=2, gpus_per_trial=1)) == {"CPU": 2, "GPU": 1}
    many = trial_resources(Budget(workers_per_trial=2, cpus_per_trial=2, gpus_per_trial=1))
    assert many == {"CPU": DRIVER_CPU} and 0 < DRIVER_CPU < 1
    tune.with_resources(lambda config: None, many)  # raised ValueError with {"CPU": 0}
