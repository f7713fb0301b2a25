"""health.png: every configuration's health measures against epochs, mean over its seeds, and a
cross where a run was flagged collapsed (issue 27's collapse, measured)."""

from __future__ import annotations

from types import SimpleNamespace as NS

from sslray.eval.health import collapse
from sslray.sweep.health_figure import collapse_lines, health_curves, health_figure
from sslray.tracking.tags import COLLAPSED_TAG


def _store():
    h = {}
    for run, std in (("a0", (0.9, 0.8, 0.8)), ("a1", (0.7, 0.6, 0.6)), ("b0", (0.5, 0.01, 0.0))):
        for key in ("health/std", "health/rank"):
            h[(run, key)] = [NS(step=e, value=v if key == "health/std" else 10 * v) for e, v in enumerate(std)]
    return NS(history=lambda run, key: h.get((run, key), []))


ROWS = [{"run": "a0", "method": "simsiam", "tags": {}}, {"run": "a1", "method": "simsiam", "tags": {}},
        {"run": "b0", "method": "simsiam-nosg",
         "tags": {COLLAPSED_TAG: f"epoch 2: {collapse({'health/rank': 0.1}, None, 1.5, 0.1)}"}}]  # as the run writes it


def test_seeds_of_a_configuration_are_averaged_per_epoch_and_collapses_kept_with_their_epoch():
    curves, collapsed = health_curves(ROWS, _store(), lambda r: r["method"])
    assert curves["simsiam"]["health/std"] == {1: [0.9, 0.7], 2: [0.8, 0.6], 3: [0.8, 0.6]}
    assert curves["simsiam-nosg"]["health/rank"][3] == [0.0] and collapsed == {"simsiam-nosg": [2]}


def test_the_figure_is_drawn_and_none_without_health_measures(tmp_path):
    path = health_figure("nn", ROWS, _store(), tmp_path, lambda r: r["method"])
    assert path == tmp_path / "health.png" and path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 20_000
    empty = NS(history=lambda run, key: [])
    assert health_figure("nn", ROWS, empty, tmp_path / "none", lambda r: r["method"]) is None
    assert not (tmp_path / "none").exists()


def test_the_report_says_which_configurations_collapsed_in_how_many_seeds_and_when():
    rows = ROWS + [{"run": "b1", "method": "simsiam-nosg",
                    "tags": {COLLAPSED_TAG: f"epoch 1: {collapse({'train/embed_std': 0.003}, 256, 1.5, 0.1)}"}},
                   {"run": "b2", "method": "simsiam-nosg", "tags": {}},
                   {"run": "c1", "method": "vicreg-novar",
                    "tags": {COLLAPSED_TAG: f"epoch 2: {collapse({'train/embed_scale': 0.05}, 256, 1.5, 0.1, 0.1)}"}}]
    assert collapse_lines(rows, lambda r: r["method"]) == [
        "collapsed: simsiam-nosg: 2 of 3 seeds, epoch 1, 2 (embedding std and rank)",
        "collapsed: vicreg-novar: 1 of 1 seeds, epoch 2 (embedding scale)"]
    assert collapse_lines(ROWS[:2], lambda r: r["method"]) == []
