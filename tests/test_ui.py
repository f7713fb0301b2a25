"""The MLflow UI as sslray hands it over: experiments marked as training, the addresses it prints."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, unquote, urlsplit

from conftest import free_port
from sslray.cli import main
from sslray.tracking import Store
from sslray.tracking.store import KIND_TAG, TRAINING_KIND
from sslray.tracking.ui import compare_url, newest_runs, runs_url, server_url, ui_url
from sslray.tracking import ui


def _fragment(url: str) -> tuple[str, dict[str, str]]:
    """The UI route of an address (after ``#``) and its query, decoded."""
    route, _, query = urlsplit(url).fragment.partition("?")
    return route, {k: v[0] for k, v in parse_qs(query).items()}


def test_new_and_existing_experiments_are_marked_as_training():
    store = Store()
    new = store.experiment("fresh")
    assert store.client.get_experiment(new).tags[KIND_TAG] == TRAINING_KIND == "custom_model_development"
    old = store.client.create_experiment("older")  # as an older sslray (or a user) made it: no kind
    assert KIND_TAG not in store.client.get_experiment(old).tags
    assert store.experiment("older") == old
    assert store.client.get_experiment(old).tags[KIND_TAG] == TRAINING_KIND
    genai = store.client.create_experiment("agent", tags={KIND_TAG: "genai_development"})
    assert store.experiment("agent", create=False) == genai  # a kind someone chose is kept
    assert store.client.get_experiment(genai).tags[KIND_TAG] == "genai_development"
    assert store.experiment("never", create=False) is None and store.client.get_experiment_by_name("never") is None


def test_runs_address_opens_the_training_table_of_a_study_flat_and_best_first():
    url = runs_url("http://127.0.0.1:5000", "7", "lr", "max transfer/res3/top1")
    assert url.startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
    route, q = _fragment(url)
    assert route == "/experiments/7/runs"
    assert q == {"workflowType": "machine_learning", "searchFilter": "tags.`sslray.study` = 'lr'",
                 "orderByKey": "metrics.`transfer/res3/top1`", "orderByAsc": "false"}
    assert _fragment(runs_url("http://h:1", "7", "lr", "min train/loss"))[1]["orderByAsc"] == "true"
    assert _fragment(runs_url("http://h:1", "3")) == ("/experiments/3/runs", {"workflowType": "machine_learning"})


def test_compare_address_lists_the_runs_and_experiments_as_json():
    url = compare_url("http://127.0.0.1:5000", ["a1", "b2"], ["7"])
    assert url == 'http://127.0.0.1:5000/#/compare-runs?runs=[%22a1%22,%22b2%22]&experiments=[%227%22]'
    route, _, query = urlsplit(url).fragment.partition("?")
    q = dict(part.split("=", 1) for part in query.split("&"))
    assert route == "/compare-runs" and json.loads(unquote(q["runs"])) == ["a1", "b2"]
    assert json.loads(unquote(q["experiments"])) == ["7"]


def test_ui_base_address(monkeypatch):
    monkeypatch.delenv("SSLRAY_UI_URL", raising=False)
    assert ui_url("sqlite:////x/mlflow.db") == "http://127.0.0.1:5000"
    assert ui_url("https://mlflow.lab.example/") == "https://mlflow.lab.example"  # a tracking server is its UI
    monkeypatch.setenv("SSLRAY_UI_URL", "http://localhost:5001/")
    assert ui_url("sqlite:////x/mlflow.db") == "http://localhost:5001"
    assert server_url("127.0.0.1", 5000) == "http://127.0.0.1:5000"
    assert server_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"


def test_a_bad_ui_address_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setenv("SSLRAY_UI_URL", "localhost:5000")
    assert main(["report", "lr"]) == 2
    err = capsys.readouterr().err
    assert "SSLRAY_UI_URL must be an http(s):// address" in err and err.count("\n") == 1


def _study_run(store: Store, name: str, objective: str = "max transfer/res3/top1") -> str:
    run = store.create_run(name, f"study-{name}", {"sslray.role": "study", "sslray.study": name})
    store.log_params(run, {"objective": objective})
    return run


def test_newest_runs_is_the_newest_study_else_the_newest_experiment():
    store = Store()
    base = "http://127.0.0.1:5000"
    assert newest_runs(store, base)[0] == "experiment Default"  # a new store: MLflow's own experiment
    store.create_run("plain-runs", "r1")
    assert newest_runs(store, base) == ("experiment plain-runs", runs_url(base, store.experiment("plain-runs")))
    _study_run(store, "older")
    _study_run(store, "newer", "min knn/res4/top1")
    store.create_run("later-plain", "r2")  # a newer experiment without a study does not hide the study
    what, url = newest_runs(store, base)
    assert what == "study newer"
    assert url == runs_url(base, store.experiment("newer"), "newer", "min knn/res4/top1")


def test_sslray_ui_prints_the_server_and_the_newest_study_runs_address(monkeypatch, capsys):
    store = Store()
    _study_run(store, "lr")
    execs = []
    port = free_port()
    monkeypatch.setattr(ui, "serve", _served(execs))  # print, but start no server
    assert main(["ui", "--port", str(port)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"MLflow UI on http://127.0.0.1:{port}  (store sqlite:///")
    expected = runs_url(f"http://127.0.0.1:{port}", store.experiment("lr"), "lr", "max transfer/res3/top1")
    assert out[1] == f"newest study lr: {expected}"
    assert "Model training" in out[2]
    (argv,) = execs
    assert argv[1:] == ["ui", "--backend-store-uri", store.uri, "--host", "127.0.0.1", "--port", str(port)]


def _served(execs: list):
    """A stand-in for :func:`sslray.tracking.ui.serve`: the server "starts" at once and ends."""
    def serve(argv, host, port, on_start):
        execs.append(argv)
        on_start()
        return 0

    return serve


def test_sslray_ui_on_a_folder_without_a_store_creates_none(monkeypatch, capsys, tmp_path):
    port = free_port()
    monkeypatch.setattr(ui, "serve", _served([]))
    assert main(["ui", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert f"MLflow UI on http://127.0.0.1:{port}" in out and "newest" not in out
    assert not (tmp_path / "mlflow.db").exists()


def test_ui_argv_is_mlflows_own_ui_over_sslrays_store():
    from sslray.cli import ui_argv
    from sslray.tracking import tracking_uri

    assert ui_argv("mlflow", "127.0.0.1", 5000) == ["mlflow", "ui", "--backend-store-uri", tracking_uri(),
                                                    "--host", "127.0.0.1", "--port", "5000"]
