"""Study files: every shipped study validates, --set reaches a study's keys, conditional
parameters, bad study files refused in one line, budgets checked before MLflow, relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_STUDY, _write

from sslray.cli import main
from sslray.sweep.runner import grid_points
from sslray.sweep.study import load_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "ablations").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_study_validates(path):
    study = load_study(str(path))
    assert study.question and study.methods
    if not (study.space.params or len(study.methods) > 1):  # one configuration: against its floor and ceiling
        assert study.baselines and study.search == "grid" and study.budget.seeds >= 3
    elif study.search == "grid":
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


def test_relative_paths_of_a_study_are_anchored_where_it_is_launched(tmp_path, monkeypatch):
    from sslray.sweep.study import _anchored

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "trials").mkdir(parents=True)
    assert _anchored("runs/trials") == str(tmp_path / "runs" / "trials")
    assert _anchored("latest:supervised?label_noise=0.5") == "latest:supervised?label_noise=0.5"
    assert _anchored("nowhere/else") == "nowhere/else" and _anchored(0.5) == 0.5


def test_one_configuration_with_its_floor_and_ceiling_is_a_study(tmp_path):
    """One method, nothing swept: with baselines on, the study still asks whether the configuration is
    above the untrained trunk (the quickstart's question); it runs once per seed."""
    from sslray.sweep.runner import planned_trials

    path = _write(tmp_path / "one.yaml", {"name": "one", "question": "q", "methods": ["shuffle_learn"],
                                          "params": {}, "search": "grid", "budget": {"seeds": 3},
                                          "data": {"name": "synthetic_video"}})
    study = load_study(str(path))
    assert study.baselines and grid_points(study) == [{"method": "shuffle_learn"}] and planned_trials(study) == 3
