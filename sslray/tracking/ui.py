"""Addresses in the MLflow UI: the server, an experiment's (or a study's) runs table, a compare view.

MLflow 3.17 opens an experiment on the page of the UI's *workflow type*, a sidebar switch
("GenAI" / "Model training") that the browser remembers and that starts on GenAI, whose landing
page is the traces overview. The experiment's kind tag (:data:`~sslray.tracking.tags.KIND_TAG`)
does not change that in 3.17: the UI reads it only when the switch is disabled, and 3.17 has it on.
An address chooses for itself: ``?workflowType=machine_learning`` opens the runs table whatever the
browser remembers. From the home page, a user picks *Model training* in the switch once.

The runs table nests a study's trials under its parent run, collapsed, when sorted by time; the
expanded state lives only in the browser (MLflow leaves it out of shared views), so no address can
open a parent expanded. Sorted by anything else, the table lists runs flat: a study's address sorts
by its objective, which shows every trial at once, best first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlencode

from ..errors import UserError
from .store import Store
from .tags import ROLE_TAG, STUDY_TAG, tag_is

DEFAULT_UI = "http://127.0.0.1:5000"  # what `sslray ui` serves unless told otherwise
UI_ENV = "SSLRAY_UI_URL"
TRAINING = {"workflowType": "machine_learning"}


def server_url(host: str, port: int) -> str:
    """The address of a UI served on ``host:port`` (a wildcard host is reached on 127.0.0.1)."""
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def ui_url(uri: str | None = None) -> str:
    """Where the MLflow UI is: ``$SSLRAY_UI_URL``; else the tracking server itself when the store
    is one (``http(s)://``); else ``http://127.0.0.1:5000``, where ``sslray ui`` serves it."""
    url = os.environ.get(UI_ENV, "").strip()
    if url:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"{UI_ENV} must be an http(s):// address of the MLflow UI, got {url!r}")
        return url.rstrip("/")
    uri = uri or ""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else DEFAULT_UI


def runs_url(base: str, experiment_id: str, study: str | None = None, objective: str | None = None) -> str:
    """An experiment's runs table; for a study, only its runs, and with ``objective`` (``"max
    transfer/res3/top1"``, as the study run's ``objective`` param reads) flat and best first."""
    query = dict(TRAINING)
    if study:
        query["searchFilter"] = tag_is(STUDY_TAG, study)
    mode, _, metric = (objective or "").partition(" ")
    if mode in ("max", "min") and metric:
        query.update(orderByKey=f"metrics.`{metric}`", orderByAsc="true" if mode == "min" else "false")
    return f"{base}/#/experiments/{experiment_id}/runs?{urlencode(query, quote_via=quote)}"


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """MLflow's compare view of some runs (the address its *Compare* button opens)."""
    def ids(xs):
        return quote(json.dumps(list(xs), separators=(",", ":")), safe="[],")

    return f"{base}/#/compare-runs?runs={ids(run_ids)}&experiments={ids(experiment_ids)}"


def newest_runs(store: Store, base: str) -> tuple[str, str] | None:
    """``(what, address)`` of the newest study's runs table (the newest run tagged
    ``sslray.role=study``), else of the newest experiment's; None for a store with none."""
    exps = store.experiments()
    if not exps:
        return None
    found = store.runs([e.experiment_id for e in exps], tag_is(ROLE_TAG, "study"),
                       order_by=["start_time DESC"], max_results=1)
    if found:
        run = found[0]
        name = run.data.tags.get(STUDY_TAG, "")
        return f"study {name}", runs_url(base, run.info.experiment_id, name, run.data.params.get("objective"))
    return f"experiment {exps[0].name}", runs_url(base, exps[0].experiment_id)


def has_store(uri: str) -> bool:
    """Whether the store exists yet (opening a SQLite store creates its file)."""
    prefix = "sqlite:///"
    return not uri.startswith(prefix) or Path(uri[len(prefix):]).exists()


def check_address(host: str, port: int) -> None:
    """The UI can be served on ``host:port``: the host resolves and the port is free on each of its
    addresses (bound and closed at once). Else a one-line UserError, before anything is written."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"ui: cannot resolve --host {host!r} ({getattr(e, 'strerror', None) or e})") from None
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no obstacle
            try:
                s.bind(addr)
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise UserError(f"ui: port {port} on {host} is in use (another server?); "
                                    f"choose another with --port") from None
                if e.errno == errno.EADDRNOTAVAIL:
                    raise UserError(f"ui: --host {host} is not an address of this machine") from None
                if e.errno == errno.EACCES:
                    raise UserError(f"ui: no permission to serve on port {port} (ports below 1024 need root)") \
                        from None
                raise UserError(f"ui: cannot serve on {host}:{port}: {e.strerror or e}") from None


def serve(argv: list[str], host: str, port: int, on_start, start_timeout: float = 120.0) -> int:
    """Run the UI server ``argv`` until it ends (or Ctrl-C), calling ``on_start()`` once it accepts
    connections on ``host:port``. Its output is held back until then: a server that stops at start
    is one line (its last), a UserError-like RuntimeError with its exit status; after the start its
    output passes through. Returns the server's exit status (0 after Ctrl-C)."""
    import socket
    import subprocess
    import sys
    import threading
    import time

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    held: list[str] = []
    started = threading.Event()

    def relay():  # the server's lines: held until it serves, then passed on
        for line in proc.stdout:
            if started.is_set():
                sys.stderr.write(line)
                sys.stderr.flush()
            else:
                held.append(line)

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    deadline = time.monotonic() + start_timeout
    try:
        while not started.is_set():
            if proc.poll() is not None:
                reader.join(timeout=2)
                last = next((ln.strip() for ln in reversed(held) if ln.strip()), "no output")
                raise ServerStopped(f"ui: the MLflow server stopped at start (exit status {proc.returncode}): "
                                    f"{last[:300]}")
            if time.monotonic() > deadline:
                raise ServerStopped(f"ui: the MLflow server did not start serving on {host}:{port} within "
                                    f"{start_timeout:.0f} s")
            try:
                with socket.create_connection((target, port), timeout=0.5):
                    started.set()
            except OSError:
                time.sleep(0.2)
        on_start()
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ServerStopped(Exception):
    """The UI server did not start: one line, exit status 1."""
