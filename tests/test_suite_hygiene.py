"""The suite itself: no assertion on elapsed time (a timed test fails on a busy machine, and passes
where a result is wrong but quick), every skip says why, and CI cannot pass with the UI untested.
Each checker is shown failing on a planted line first, as test_architecture shows its own."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CLOCKS = {"time", "perf_counter", "monotonic", "process_time", "time_ns", "perf_counter_ns", "monotonic_ns"}


def _is_clock_call(node: ast.AST) -> bool:
    """``time.time()``, ``time.perf_counter()``, ``perf_counter()``, ``monotonic()``, ..."""
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    return name in CLOCKS


def _elapsed(node: ast.AST, timed: set[str]) -> bool:
    """Does ``node`` compute an elapsed time: ``clock() - t``, or use a name assigned one?"""
    for sub in ast.walk(node):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Sub) and (
                _is_clock_call(sub.left) or _is_clock_call(sub.right)):
            return True
        if isinstance(sub, ast.Name) and sub.id in timed:
            return True
    return False


def timing_assertions(source: str, filename: str = "<test>") -> list[str]:
    """``file:line`` of every ``assert`` on an elapsed time, directly (``assert time.time() - t < 75``)
    or through a name (``took = perf_counter() - t0`` ... ``assert took < 5``)."""
    tree = ast.parse(source, filename)
    timed: set[str] = set()
    for node in ast.walk(tree):  # names that hold an elapsed time, anywhere in the file
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None \
                and _elapsed(node.value, set()):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            timed |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return [f"{filename}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Assert) and _elapsed(n.test, timed)]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _is_reason(node: ast.AST | None) -> bool:
    """A reason a reader can follow: a non-empty string (or f-string) literal, or a name that holds
    one (a helper's ``why``, as in _browser.chromium_or_skip)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and bool(node.value.strip())
    return isinstance(node, ast.JoinedStr) and bool(node.values) or isinstance(node, ast.Name)


def unexplained_skips(source: str, filename: str = "<test>") -> list[str]:
    """``file:line`` of every skip that does not say why: ``pytest.skip()``, ``pytest.mark.skip`` /
    ``skipif`` / ``xfail`` without ``reason=``, ``pytest.importorskip`` without ``reason=``."""
    bad = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        reason = next((k.value for k in node.keywords if k.arg in ("reason", "msg")), None)
        if name in ("pytest.skip", "pytest.xfail", "pytest.mark.skip"):
            reason = reason or (node.args[0] if node.args else None)
        elif name in ("pytest.mark.skipif", "pytest.mark.xfail", "pytest.importorskip"):
            pass  # only reason= counts: a skipif's first argument is its condition
        else:
            continue
        if not _is_reason(reason):
            bad.append(f"{filename}:{node.lineno} {name}")
    # a decorator written without a call (``@pytest.mark.skip``) gives no reason at all
    for node in ast.walk(ast.parse(source, filename)):
        for dec in getattr(node, "decorator_list", []):
            if not isinstance(dec, ast.Call) and _dotted(dec) in ("pytest.mark.skip", "pytest.mark.xfail"):
                bad.append(f"{filename}:{dec.lineno} {_dotted(dec)}")
    return bad


def _suite() -> list[Path]:
    return sorted(TESTS.glob("*.py"))


PLANTED_TIMING = '''
import time
from time import perf_counter

def test_quick():
    t = time.time()
    run()
    assert time.time() - t < 5

def test_quick_by_name():
    t0 = perf_counter()
    run()
    took = perf_counter() - t0
    assert took < 5 and ok

def test_a_deadline_that_only_guards_a_hang():
    deadline = time.time() + 400
    while time.time() < deadline and not done():
        time.sleep(0.5)
    assert done()
'''


def test_the_timing_check_fails_on_a_planted_timed_assertion(tmp_path):
    assert timing_assertions(PLANTED_TIMING, "planted.py") == ["planted.py:8", "planted.py:14"]
    # the same from a file on disk, as the suite is read
    planted = tmp_path / "test_planted.py"
    planted.write_text("import time\n\ndef test_x():\n    t = time.time()\n    assert time.time() - t < 5\n")
    assert timing_assertions(planted.read_text(), planted.name) == ["test_planted.py:5"]


def test_no_test_asserts_on_elapsed_time():
    found = [hit for path in _suite() for hit in timing_assertions(path.read_text(), path.name)]
    assert found == [], "assert the outcome, keep a deadline only as a guard against a hang: " + ", ".join(found)


PLANTED_SKIPS = '''
import pytest

@pytest.mark.skipif(cond)
def test_a(): ...

@pytest.mark.skip
def test_b(): ...

@pytest.mark.skipif(cond, reason="needs a GPU")
def test_c(): ...

def test_d():
    pytest.skip()
    pytest.skip("")
    pytest.skip("no chromium")
    pytest.skip(reason=f"{n} images")
    pytest.importorskip("selenium")
    pytest.importorskip("selenium", reason="the browser test drives selenium")

@pytest.mark.skip("a positional reason")
def test_e(): ...
'''


def test_the_skip_check_fails_on_a_planted_skip_without_a_reason():
    assert unexplained_skips(PLANTED_SKIPS, "planted.py") == [
        "planted.py:4 pytest.mark.skipif", "planted.py:14 pytest.skip", "planted.py:15 pytest.skip",
        "planted.py:18 pytest.importorskip", "planted.py:7 pytest.mark.skip"]


def test_every_skip_in_the_suite_says_why():
    found = [hit for path in _suite() for hit in unexplained_skips(path.read_text(), path.name)]
    assert found == [], "give every skip a reason: " + ", ".join(found)


# ---- CI cannot pass with the browser test skipped -------------------------------------------------

def test_a_missing_browser_skips_outside_ci_and_fails_under_ci(monkeypatch):
    import shutil

    import _browser

    def outcome():  # caught whole: a skip where a failure is due must fail this test, not skip it
        try:
            _browser.chromium_or_skip()
        except BaseException as e:  # noqa: BLE001
            return e
        return None

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    got = outcome()
    assert type(got) is pytest.skip.Exception and "chromium and chromium-driver are not installed" in str(got)
    monkeypatch.setenv("CI", "true")
    got = outcome()
    assert type(got) is pytest.fail.Exception and "CI=true and the browser test cannot run" in str(got)


def _ci_run(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    """.ci/run in a copy of the repository's layout whose PATH has no chromium, an apt-get that
    fails, and a pip and python that only note that they ran."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "dirname").symlink_to(shutil_which("dirname"))
    for name, body in (("apt-get", "exit 100"), ("pip", f"echo pip >> {tmp_path}/ran"),
                       ("python", f'echo "python $*" >> {tmp_path}/ran')):
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    return subprocess.run([shutil_which("bash"), str(tmp_path / ".ci" / "run")], capture_output=True, text=True,
                          env={"PATH": str(bin_), **env}, timeout=60)


def shutil_which(name: str) -> str:
    import shutil

    path = shutil.which(name)
    assert path, name
    return path


def test_ci_run_fails_when_chromium_cannot_be_installed_under_ci(tmp_path):
    for d in ("ci", "local"):
        (tmp_path / d).mkdir()
    ci = _ci_run(tmp_path / "ci", {"CI": "true"})
    assert ci.returncode == 1 and "could not install chromium" in ci.stderr
    assert not (tmp_path / "ci" / "ran").exists()  # the tests did not run at all
    local = _ci_run(tmp_path / "local", {})
    assert local.returncode == 0 and "warning: could not install chromium" in local.stdout
    # outside CI it goes on to README's command, exactly
    assert (tmp_path / "local" / "ran").read_text() == "pip\npython -m pytest -q\n"


def test_ci_run_runs_exactly_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    command = 'pip install -q -e ".[test]" && python -m pytest -q'
    assert f"\n{command}\n" in readme
    assert (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1] == command
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
