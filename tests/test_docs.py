"""The documentation: the site builds offline with warnings as errors (a broken link, a missing figure or
an unknown anchor fails it, shown failing on a planted one), its methods page says what ``sslray
methods`` says, and README — the front door — stays short and points at pages and figures that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sslray
from sslray.cli import main
from sslray.methods import discover
from sslray.methods.catalogue import as_markdown, as_text, catalogue

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def build(root: Path, out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the site whose ``mkdocs.yml`` is in ``root``, into ``out``, offline. Never
    with ``-q``: mkdocs counts only the warnings it logs, so a quiet strict build passes a broken link."""
    env = {**os.environ, "PYTHONPATH": str(Path(sslray.__file__).parents[1]), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(root / "mkdocs.yml"), "-d", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    done = build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stderr
    methods = (tmp_path / "site" / "methods" / "index.html").read_text()
    for name in ("simclr", "byol", "simsiam", "barlow", "vicreg", "dino", "shuffle_learn", "random"):
        assert f'id="{name}"' in methods
    # every figure the pages show is in the site
    for page in (tmp_path / "site").rglob("*.html"):
        for src in re.findall(r'<img [^>]*src="([^"]+)"', page.read_text()):
            if not src.startswith(("http", "data:")):
                assert (page.parent / src).resolve().is_file(), f"{page}: {src}"
    assert not (ROOT / "docs" / "methods.md").exists()  # generated at build time, never in the tree


@pytest.mark.parametrize("planted, phrase", [
    ("[the study](studies/no-such-study.md)", "studies/no-such-study.md"),
    ("![a figure](results/no-such-figure.png)", "results/no-such-figure.png"),
    ("[a section](studies/negatives.md#no-such-section)", "no-such-section"),
], ids=["broken link", "missing figure", "unknown anchor"])
def test_the_build_fails_on_a_planted_broken_reference(tmp_path, planted, phrase):
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "getting-started.md"
    page.write_text(page.read_text() + f"\nSee {planted}.\n")
    done = build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert phrase in done.stderr + done.stdout


def test_the_methods_page_says_what_sslray_methods_prints(capsys):
    entries = catalogue()
    assert [e.name for e in entries] == sorted(discover())
    assert main(["methods"]) == 0
    assert capsys.readouterr().out == as_text(entries) + "\n"
    page = as_markdown(entries)
    for e in entries:
        assert f"\n## {e.name}\n" in page and e.summary in page
        section = page.split(f"\n## {e.name}\n")[1].split("\n## ")[0]
        for s in e.settings:
            assert f"| `{s.key}` | `{s.default!r}` |" in section
    simclr = next(e for e in entries if e.name == "simclr")
    temperature = next(s for s in simclr.settings if s.key == "temperature")
    assert (temperature.default, temperature.bounds) == (0.5, "> 0, ≤ 10")
    assert "Chen et al. 2020" in simclr.about


def _readme_links() -> list[str]:
    text = README.read_text()
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not t.startswith(("http://", "https://", "#"))]


def test_readme_fits_on_a_screen_and_points_at_what_exists():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300
    links = _readme_links()
    assert any(t.endswith(".png") for t in links)  # the one figure
    assert {"docs/findings.md", "docs/studies/index.md", "docs/cluster.md"} <= {t.split("#")[0] for t in links}
    for target in links:
        assert (ROOT / target.split("#")[0]).exists(), target


def test_readmes_method_table_lists_every_registered_method():
    rows = {m.group(1) for m in re.finditer(r"^\| `([a-z_0-9]+)` \|", README.read_text(), re.M)}
    assert set(discover()) <= rows, sorted(set(discover()) - rows)


def test_every_finding_has_a_verdict_and_every_study_a_finding():
    text = (ROOT / "docs" / "findings.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith(("| claim", "|---"))]
    assert len(rows) >= 30 and all(len(r) == 5 for r in rows)
    verdicts = ("holds", "does not hold", "not separable at this scale")
    assert all(r[3].startswith(verdicts) for r in rows), [r[3] for r in rows if not r[3].startswith(verdicts)]
    cited = {m for r in rows for m in re.findall(r"\]\(studies/([a-z0-9-]+\.md)\)", r[1])}
    pages = {p.name for p in (ROOT / "docs" / "studies").glob("*.md")} - {"index.md", "cpu-scale.md"}
    assert pages <= cited, sorted(pages - cited)
