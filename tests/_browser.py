"""Headless Chromium for the tests that walk the MLflow UI as a user does (Debian's chromium and
chromium-driver, installed by .ci/run): the server ``sslray ui`` starts, explicit waits, and a
screenshot plus page source of every step that fails, in a folder the failure names."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

WAIT_S = 90  # generous: the UI loads its bundle and queries the store on two shared CPUs


def chromium_or_skip() -> tuple[str, str]:
    """Chromium and chromedriver's paths; without them (or selenium) the test skips, saying why,
    except under CI (``CI=true``), where it fails: CI must not pass with the UI untested."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    missing = None
    if not (chromium and chromedriver):
        missing = "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
    else:
        try:
            import selenium  # noqa: F401
        except ImportError:
            missing = "selenium is not installed (pip install -e '.[test]' installs it)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the browser test cannot run: {missing}", pytrace=False)
        pytest.skip(missing)
    return chromium, chromedriver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_ui(port: int, log: Path, start_s: float = 300):
    """The server ``sslray ui`` execs (same arguments, run as ``python -m mlflow``), once healthy;
    its output goes to ``log``. It starts in ~30 s on an idle 2-CPU machine: wait generously."""
    from sslray.cli import ui_argv

    argv = [sys.executable, "-m", "mlflow", *ui_argv("mlflow", "127.0.0.1", port)[1:]]
    with open(log, "wb") as out:
        server = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + start_s
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    why = f"exited with {server.returncode}" if server.poll() is not None else f"not healthy after {start_s:.0f} s"
                    raise RuntimeError(f"`{' '.join(argv)}` {why}; its output: {log}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the server and its workers: its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(30)
                break


class Browser:
    """One headless Chromium session; :meth:`step` names what the user is doing, so that a failure
    says which step failed and leaves its screenshot and page source in ``shots``."""

    def __init__(self, chromium: str, chromedriver: str, profile: Path, shots: Path, size=(1600, 900)):
        from selenium import webdriver

        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                    "--no-first-run", "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-smooth-scrolling", f"--window-size={size[0]},{size[1]}", f"--user-data-dir={profile}"):
            opts.add_argument(arg)
        self.driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=chromedriver))
        self.shots = shots
        shutil.rmtree(shots, ignore_errors=True)  # only this run's failures
        self.steps = 0

    def quit(self) -> None:
        self.driver.quit()

    @contextlib.contextmanager
    def step(self, name: str):
        self.steps += 1
        try:
            yield
        except Exception as e:
            self.shots.mkdir(parents=True, exist_ok=True)
            stem = self.shots / f"{self.steps:02d}-{name.replace(' ', '-')}"
            with contextlib.suppress(Exception):
                self.driver.save_screenshot(f"{stem}.png")
                Path(f"{stem}.html").write_text(self.driver.page_source)
            raise AssertionError(f"MLflow UI, step {name!r} failed at {self.driver.current_url}: "
                                 f"{type(e).__name__}: {str(e).strip()[:500]} "
                                 f"(screenshot and page source in {self.shots})") from e

    def wait(self, condition, what: str, timeout: float = WAIT_S):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(condition, message=f"waited for {what}")

    def find(self, xpath: str, what: str, timeout: float = WAIT_S, shown: bool = True):
        """The first element at ``xpath`` (displayed, unless ``shown=False``), once there is one."""
        from selenium.webdriver.common.by import By

        def found(d):
            return next((e for e in d.find_elements(By.XPATH, xpath) if not shown or e.is_displayed()), False)

        return self.wait(found, what, timeout)

    def click(self, xpath: str, what: str, timeout: float = WAIT_S, shown: bool = True) -> None:
        self.find(xpath, what, timeout, shown).click()

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.TAG_NAME, "body").text

    #: A table row's label (at xpath arguments[0]) in its clipping box: [in sight?, x, y, wheel
    #: direction], x, y just right of the box; the box is found from any row at arguments[2] while
    #: the label's row is not drawn yet (the table draws only the rows near its view). Scrolls the
    #: page, not the box, to show the box; with arguments[1], levels the values scrolling beside
    #: the box (as tall, level with it) with the labels. One script: no element goes stale in between.
    _LABEL = """
        const find = xp => document.evaluate(xp, document, null, XPathResult.FIRST_ORDERED_NODE_TYPE, null)
                                   .singleNodeValue;
        const label = find(arguments[0]), anchor = label || find(arguments[2]);
        if (!anchor) return null;
        let box = anchor.parentElement;
        while (box && box.scrollHeight <= box.clientHeight + 1) box = box.parentElement;
        if (!box) return null;
        let b = box.getBoundingClientRect();
        if (b.top < 0 || b.bottom > innerHeight) { box.scrollIntoView({block: 'center'}); b = box.getBoundingClientRect(); }
        const x = Math.round(b.right + 60), y = Math.round((b.top + b.bottom) / 2);
        if (!label) return [false, x, y, 1];
        const r = label.getBoundingClientRect();
        if (arguments[1]) {
            const s = [...document.querySelectorAll('*')].find(e => e !== box && e.scrollHeight === box.scrollHeight
                && Math.abs(e.getBoundingClientRect().top - b.top) < 2 && /(auto|scroll)/.test(getComputedStyle(e).overflowY));
            // the labels follow the values' scroll events, one event late at times, and stop at their
            // own end: bring the values back to that end, or send one more (1 px) event; 3 tries
            const end = box.scrollHeight - box.clientHeight;
            window.sslrayNudges = (window.sslrayNudges || 0) + 1;
            if (s && window.sslrayNudges <= 3 && s.scrollTop > end) { s.scrollTop = end; return null; }
            if (s && window.sslrayNudges <= 3 && Math.abs(s.scrollTop - box.scrollTop) > 1.5) { s.scrollTop -= 1; return null; }
            window.sslrayNudges = 0;
        }
        return [r.height > 0 && r.top >= b.top - 1 && r.bottom <= b.bottom + 1, x, y, r.top < b.top ? -1 : 1];"""

    def wheel_to(self, xpath: str, rows: str, what: str, ticks: int = 80) -> None:
        """Turn the mouse wheel over a table until the row label at ``xpath`` is wholly in sight, as
        a user scrolls MLflow's compare tables: their labels (any of them at ``rows``) sit in a
        clipped box that follows the values scrolling beside it, so the wheel turns just right of
        the labels. A row not drawn yet is looked for further down."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.actions.wheel_input import ScrollOrigin

        for _ in range(ticks):
            seen, x, y, down = self.wait(lambda d: d.execute_script(self._LABEL, xpath, False, rows), what)
            if seen:
                break
            ActionChains(self.driver).scroll_from_origin(ScrollOrigin.from_viewport(x, y), 0, 22 * down).perform()
        else:
            raise AssertionError(f"{ticks} turns of the wheel did not bring {what} into sight")
        # the labels can lag the values by a turn (or, above a horizontal scrollbar, fall short of
        # them at the table's end): level them, so that a screenshot shows each value beside its
        # label (cosmetic: a table that will not level is left as it is)
        with contextlib.suppress(Exception):
            self.wait(lambda d: d.execute_script(self._LABEL, xpath, True, rows), f"the values beside {what}", timeout=5)

    def image_shown(self, min_width: int = 100) -> bool:
        """Whether a loaded image at least ``min_width`` px wide is on screen (an artifact preview)."""
        return self.driver.execute_script(
            "return [...document.images].some(i => i.complete && i.naturalWidth >= arguments[0]"
            " && i.getBoundingClientRect().width >= arguments[0])", min_width)
