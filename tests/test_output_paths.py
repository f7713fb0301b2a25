"""Reliability round two, the one-command cases the bad-input harness cannot hold (they need an
environment variable, a store that is a folder, a taken port or a silent endpoint): every one ends
in one line, exit 2 (1 for a server that stops at start), and writes nothing. Also the output-path
check itself (:mod:`sslray.paths`)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from conftest import free_port
from sslray.cli import main
from sslray.errors import UserError
from sslray.paths import FIGURE_SUFFIXES, check_output, problem

TINY = ["--set", "data.limit=40", "--set", "data.test_limit=20", "--set", "trunk.width=0.125", "--set",
        "optim.batch_size=20", "--epochs", "1", "--quiet"]


def _one_line(capsys, phrase: str) -> str:
    out, err = capsys.readouterr()
    err = err.strip()
    assert err.count("\n") == 0 and err.startswith("sslray: error:") and phrase in err, err
    return out


def _nothing_written(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir() if p.name not in ("f", "mlflow.db")) == [], list(root.iterdir())


# ---------------------------------------------------------------- the check itself
def test_an_output_path_is_checked_for_kind_suffix_place_and_length(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d.png").mkdir()
    assert problem(tmp_path / "new" / "deeper", "folder") is None  # creatable: its nearest ancestor is writable
    assert problem(tmp_path / "d.png", "folder") is None
    assert problem(tmp_path / "f", "file") is None
    assert problem(tmp_path / "d.png", "file") == "a folder, not a file"
    assert problem(tmp_path / "f", "folder") == "a file, not a folder"
    assert problem(tmp_path / "f" / "sub" / "x.png", "file") == f"{tmp_path / 'f'} is a file, not a folder"
    assert problem("/proc/sslray-out", "folder") == "permissions"  # refused even to root
    assert problem(tmp_path / "plot.txt", "file", (".png", ".pdf")) == "not a png or pdf file"
    assert problem(tmp_path / "plot.PNG", "file", (".png", ".pdf")) is None
    assert problem("x" * 5000, "folder") == "the path is too long for the file system"
    assert problem("/".join(["y" * 200] * 25), "folder") == "the path is too long for the file system"  # PATH_MAX
    assert problem("", "folder") == "an empty path"
    with pytest.raises(UserError) as e:
        check_output("p" * 4996 + ".png", "file", FIGURE_SUFFIXES, what="cannot write")
    assert str(e.value) == f"cannot write {'p' * 180}... (5000 characters) (the path is too long for the file system)"
    assert check_output(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checked, not created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png", "f"]  # the writability probe left nothing


def test_every_figure_suffix_is_one_matplotlib_writes():
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    assert {s.lstrip(".") for s in FIGURE_SUFFIXES} <= set(supported)


# ---------------------------------------------------------------- r2-7: the data cache, compare's plot
@pytest.mark.parametrize("cache, phrase", [("f", "SSLRAY_CACHE: cannot use f (a file, not a folder)"),
                                           ("f/cache", "f is a file, not a folder"),
                                           ("/proc/sslray-cache", "SSLRAY_CACHE: cannot use /proc/sslray-cache "
                                                                  "(permissions)")])
def test_r2_7_a_cache_that_is_a_file_or_unwritable_is_one_line(cache, phrase, tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("SSLRAY_CACHE", cache)
    assert main(["train", "--method", "rotation", "--no-eval", *TINY]) == 2
    _one_line(capsys, phrase)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()
    assert (tmp_path / "f").read_text() == "x"


def _evaluated_run(root: Path, name: str, top1: float) -> Path:
    d = root / name
    d.mkdir()
    (d / "config.yaml").write_text("method: rotation\nsettings: {}\nepochs: 1\n")
    (d / "transfer.json").write_text(json.dumps({f"transfer/{layer}/top1": top1 for layer in
                                                 ("res1", "res2", "res3", "res4", "res5")}))
    return d


def test_r2_7_compare_with_a_plot_it_cannot_write_prints_no_table(tmp_path, capsys):
    _evaluated_run(tmp_path, "a", 0.5)
    assert main(["compare", "a"]) == 0
    assert "Linear probe top-1" in capsys.readouterr().out  # the run compares
    (tmp_path / "figs.png").mkdir()
    for plot, why in (("out.txt", "(not a png"), ("figs.png", "(a folder, not a file)"), ("/proc/p.png", "(permissions)")):
        assert main(["compare", "a", "--plot", plot]) == 2
        assert _one_line(capsys, f"compare: cannot write the plot to {plot} {why}") == ""  # no table printed


# ---------------------------------------------------------------- r2-12: a store that is a folder
@pytest.mark.parametrize("argv", [["train", "--method", "rotation", *TINY], ["report", "s"], ["ui", "--port", "5391"]])
def test_r2_12_an_mlflow_db_that_is_a_folder_is_one_line(argv, tmp_path, capsys):
    (tmp_path / "mlflow.db").mkdir()
    assert main(argv) == 2
    _one_line(capsys, f"the MLflow store sqlite:///{tmp_path}/mlflow.db cannot be used (a folder, not a file)")
    assert list((tmp_path / "mlflow.db").iterdir()) == [] and not (tmp_path / "runs").exists()


def test_r2_12_a_store_under_a_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///f/mlflow.db")
    assert main(["train", "--method", "rotation", *TINY]) == 2
    _one_line(capsys, "cannot be used (" + f"{tmp_path / 'f'} is a file, not a folder)")


# ---------------------------------------------------------------- r2-12: a remote root that does not answer
@pytest.fixture
def silent_endpoint(monkeypatch):
    """A local port that accepts connections and never answers (an S3 endpoint that hangs), with
    credentials of no account, so the S3 client asks nothing of any other host."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    for k, v in (("AWS_ACCESS_KEY_ID", "none"), ("AWS_SECRET_ACCESS_KEY", "none"), ("AWS_EC2_METADATA_DISABLED", "true")):
        monkeypatch.setenv(k, v)
    yield f"127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_r2_12_a_silent_remote_root_is_one_line_within_its_deadline(silent_endpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SSLRAY_REMOTE_TIMEOUT", "2")
    uri = f"s3://bucket/images?endpoint_override={silent_endpoint}&scheme=http&region=us-east-1"
    assert main(["train", "--method", "rotation", "--data", "imagefolder", "--root", uri, *TINY]) == 2
    _one_line(capsys, f"cannot reach data root {uri} within 2 s")  # the library alone: minutes
    _nothing_written(tmp_path)


def test_r2_12_the_remote_deadline_is_bounded_and_read_from_the_environment(monkeypatch):
    from sslray.data.remote import DEFAULT_TIMEOUT, bounded, remote_timeout

    assert DEFAULT_TIMEOUT <= 20
    monkeypatch.setenv("SSLRAY_REMOTE_TIMEOUT", "7.5")
    assert remote_timeout() == 7.5
    for bad in ("0", "-3", "nan", "soon", "1e9"):
        monkeypatch.setenv("SSLRAY_REMOTE_TIMEOUT", bad)
        with pytest.raises(UserError, match="SSLRAY_REMOTE_TIMEOUT must be a number of seconds"):
            remote_timeout()
    import pyarrow.fs as pafs

    s3 = bounded(pafs.S3FileSystem(endpoint_override="127.0.0.1:9", scheme="http", region="us-east-1"), 8)
    options = s3.__reduce__()[1][0]
    assert (options["connect_timeout"], options["request_timeout"], options["endpoint_override"]) == (4, 4, "127.0.0.1:9")
    gcs = bounded(pafs.GcsFileSystem(anonymous=True, endpoint_override="127.0.0.1:9", scheme="http"), 8)
    assert gcs.__reduce__()[1][0]["retry_time_limit"].total_seconds() == 8


# ---------------------------------------------------------------- r2-8: sslray ui
def test_r2_8_ui_on_a_port_in_use_is_one_line_and_creates_no_store(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    out = _one_line(capsys, f"ui: port {port} on 127.0.0.1 is in use")
    assert out == "" and not (tmp_path / "mlflow.db").exists()


def test_r2_8_a_server_that_stops_at_start_is_one_line_and_non_zero(tmp_path, monkeypatch, capsys):
    import sslray.cli as cli

    dies = [sys.executable, "-c", "import sys; print('starting'); print('OSError: [Errno 98] Address already in use', "
                                  "file=sys.stderr); sys.exit(3)"]
    monkeypatch.setattr(cli, "ui_argv", lambda exe, host, port: dies)
    assert main(["ui", "--port", str(free_port())]) == 1
    out = _one_line(capsys, "ui: the MLflow server stopped at start (exit status 3): OSError: [Errno 98] Address "
                            "already in use")
    assert "MLflow UI on" not in out  # never announced as serving


def test_r2_8_the_address_is_printed_once_the_server_answers(tmp_path, monkeypatch, capsys):
    import sslray.cli as cli

    port = free_port()
    # a stand-in server: answers on the port, then ends by itself (no server is left behind)
    server = [sys.executable, "-c", "import socket, time; s = socket.socket(); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              f"s.bind(('127.0.0.1', {port})); s.listen(4); c, _ = s.accept(); c.close(); s.close()"]
    monkeypatch.setattr(cli, "ui_argv", lambda exe, host, port: server)
    assert main(["ui", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"MLflow UI on http://127.0.0.1:{port}  (store sqlite:///")
