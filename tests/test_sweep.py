"""Sweeps: a real sweep and what it logs, the MLflow walk, --resume, ASHA and the searcher over
seeds, diverged, interrupted and collapsed trials, a multi-worker trial's resources."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_STUDY, _write, assert_probed

from sslray import LAYERS
from sslray.cli import main

ROOT = Path(__file__).resolve().parents[1]


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
    for fig in ("metric_vs_swept.png", "per_layer_best.png", "health.png"):  # health: the trials' health per epoch
        assert (Path("reports/lr") / fig).read_bytes()[:4] == b"\x89PNG"
    assert {a.path for a in c.list_artifacts(p.info.run_id, "report")} == {"report/metric_vs_swept.png",
                                                                          "report/per_layer_best.png",
                                                                          "report/health.png"}
    # the study's experiment is marked as training (MLflow's kind tag); report prints where to look
    exp = p.info.experiment_id
    assert c.get_experiment(exp).tags[KIND_TAG] == TRAINING_KIND
    ui = "http://127.0.0.1:5000"
    assert f"MLflow runs: {runs_url(ui, exp, 'lr', 'max transfer/res3/top1')}\n" in out
    compare = next(line for line in out.splitlines() if line.startswith("MLflow compare: "))
    ids = [r.info.run_id for r in children]
    assert compare.removeprefix("MLflow compare: ") in (compare_url(ui, ids, [exp]), compare_url(ui, ids[::-1], [exp]))


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
    """The docs' MLflow walk-through (docs/mlflow-ui.md) in headless Chromium: the server `sslray ui`
    starts, its home page, the study's experiment by name (on its runs table, not the GenAI overview),
    the trial rows, tick them, *Compare*, every layer's metric; then the addresses `sslray report` prints, each trial's
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
                if os.environ.get("SSLRAY_DOCS_SHOTS"):  # the walk-through's picture, made here: a small palette PNG
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
    assert f"figure: {Path('reports') / 'coll' / 'health.png'}" in out  # the collapse, drawn per epoch


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


def test_baselines_started_beside_the_trials_are_collected_or_cancelled_with_one_line_each():
    """The floor and ceiling run as Ray tasks beside the trials: collected when the sweep ends, or,
    when it stopped early, cancelled if unfinished; a failed or unfinished one is a line, not an error."""
    import time

    import ray

    from sslray.sweep.baselines import Baselines

    @ray.remote(num_cpus=0, max_retries=0)
    def finishes(run_id, seconds=0.0):
        time.sleep(seconds)
        return run_id

    @ray.remote(num_cpus=0, max_retries=0)
    def fails():
        raise RuntimeError("out of memory\nin the probe")

    ray.init(address="local", num_cpus=1, include_dashboard=False)  # never a stale `ray start` cluster
    try:
        done = Baselines({"random": "r0"}, {"supervised": finishes.remote("s1")})
        assert done.collect() == ({"random": "r0", "supervised": "s1"}, [])
        broken = Baselines({}, {"random": finishes.remote("r1"), "supervised": fails.remote()})
        assert broken.collect() == ({"random": "r1"}, ["the ceiling (supervised) failed: RuntimeError: in the probe"])
        stopped = Baselines({"random": "r0"}, {"supervised": finishes.remote("s1", 60)})
        assert stopped.collect(wait=False) == (
            {"random": "r0"}, ["the ceiling (supervised) did not finish: the sweep stopped first"])
    finally:
        ray.shutdown()
