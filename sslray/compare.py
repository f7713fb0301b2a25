"""``sslray compare``: finished runs side by side, layer by layer.

Reads each run folder's ``transfer.json`` (written by the per-layer evaluation) and
``config.yaml``, and prints Markdown tables (paste-ready for a README or a paper draft): linear
probe and kNN top-1 by layer, and, where runs measured them, the invariance measures per
transform. Rows are labelled by method plus the settings in which runs of one method differ
(``jigsaw permutations=100``), so a comparison never hides what changed. ``--plot`` draws the
per-layer curves of every run in one figure.

Runs that differ only by seed are one row: the mean over seeds with its Student-t interval, and a
line per layer says whether the best setting is separable from the runner-up at this budget.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import LAYERS
from .config import IGNORED, flatten_tree, setting_key
from .errors import UserError
from .eval import results as res
from .paths import FIGURE_SUFFIXES, check_output
from .stats import LEVEL, METHOD, Interval, check_level, layer_intervals, separability
from .table import layer_table, pct
from .tracking import RunDir


def load_run(target: str, runs: str = "runs") -> dict[str, Any]:
    """``{"dir", "config", "metrics"}`` of a run folder (or an MLflow run id under ``runs``)."""
    run = RunDir(target)
    if not run.has(RunDir.TRANSFER):
        matches = [RunDir(p.parent) for p in Path(runs).glob(f"*/{RunDir.META}")
                   if RunDir(p.parent).meta().get("mlflow_run_id") == target] if Path(runs).is_dir() else []
        if not matches and not run.path.is_dir():
            raise UserError(f"compare: {target} is neither a run folder nor a run id")
        run = matches[0] if matches else run
    try:
        metrics = run.transfer()
    except UserError as e:
        raise UserError(f"compare: {e}") from None
    config = run.config() if run.has(RunDir.CONFIG) else {}
    return {"dir": run.path, "config": config, "metrics": metrics}


def labels(runs: list[dict[str, Any]]) -> list[str]:
    """Method name, plus every setting (or epoch count) that differs among runs of that method."""
    out = []
    flats = [{k: v for k, v in flatten_tree(r["config"]).items() if not k.startswith(IGNORED)} for r in runs]
    for r, flat in zip(runs, flats):
        method = r["config"].get("method", r["dir"].name)
        peers = [f for p, f in zip(runs, flats) if p["config"].get("method", p["dir"].name) == method]
        differ = []
        for key in sorted({k for f in peers for k in f}, key=lambda k: (k != "epochs", not k.startswith("settings."), k)):
            if key in ("method", "eval.data") or key.startswith("eval.data.") or \
                    len({json.dumps(f.get(key), sort_keys=True, default=str) for f in peers}) < 2:
                continue
            if key == "epochs":
                differ.append(f"{flat.get('epochs')} ep")
            else:
                differ.append(f"{key.removeprefix('settings.')}={_short(flat.get(key))}")
        on = (r["config"].get("eval") or {}).get("data")
        if on:  # the numbers are on another collection than the pretraining: say which
            differ.append(f"(evaluated on {on.get('name')}" + (f" {Path(on['root']).name}" if on.get("root") else "") + ")")
        out.append(" ".join([method, *differ]))
    return out


def group_runs(runs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs that differ only by seed, together, in the order their first run was given."""
    groups: dict[str, list] = {}
    for r in runs:
        groups.setdefault(setting_key(r["config"]), []).append(r)
    return list(groups.values())


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "+".join(str(k) for k in value)
    if isinstance(value, str) and "/" in value:
        return Path(value).name.split("-")[0]  # a source run folder: its method
    return str(value)


def family_intervals(groups: list[list[dict[str, Any]]], family, level: float) -> list[dict[str, Interval]]:
    """Per group: ``{layer: Interval}`` over its runs (seeds) of ``family(metrics)``, a run's
    ``{layer: top1}`` of one protocol (:func:`sslray.eval.results.linear_top1`, ``knn_top1``)."""
    out = []
    for g in groups:
        per = [family(r["metrics"]) for r in g]
        out.append(layer_intervals(per, lambda p, layer: p.get(layer), level))
    return out


def family_table(intervals: list[dict[str, Interval]], names: list[str]) -> str:
    rows = [(name, per) for name, per in zip(names, intervals)]
    return layer_table(rows, style="markdown", corner="run", cell=lambda i: i.text())


def separable_lines(intervals: list[dict[str, Interval]], names: list[str]) -> list[str]:
    """Per layer: the best setting by its mean, and whether the runner-up's interval overlaps."""
    lines = []
    for layer in LAYERS:
        have = sorted(((n, per[layer]) for n, per in zip(names, intervals) if layer in per),
                      key=lambda x: -x[1].mean)
        if len(have) >= 2:
            lines.append(f"- {layer}: {separability(have[0], have[1])}")
    return lines


def invariance_tables(runs: list[dict[str, Any]], names: list[str]) -> str:
    """Per transform: each layer's mean cosine of f(I), f(I^t) and the transform probe's top-1."""
    inv = [res.invariance(r["metrics"]) for r in runs]
    blocks = []
    for t in sorted({t for i in inv for t in res.transforms(i)}):
        have = [(n, i) for n, i in zip(names, inv) if (t, None, "chance") in i]
        chance = have[0][1][t, None, "chance"]
        rows = [(name, {layer: (i[t, layer, "cosine"], i.get((t, layer, "probe_top1")))
                        for layer in LAYERS if (t, layer, "cosine") in i}) for name, i in have]
        title = f"**{t}** — cosine(f(I), f(I^t)) / probe top-1 predicting the {t} (chance {pct(chance)} %)"
        table = layer_table(rows, style="markdown", corner="run", cell=lambda v: f"{v[0]:.2f} / {pct(v[1], '–')}")
        blocks.append(f"{title}\n\n{table}")
    return "\n\n".join(blocks)


def compare(targets: list[str], runs: str = "runs", plot: str | None = None, invariance: bool = True,
            level: float = LEVEL) -> str:
    level = check_level(level)
    if plot:  # before any table is made: a plot that cannot be written is no half-done comparison
        check_output(plot, "file", FIGURE_SUFFIXES, what="compare: cannot write the plot to")
    loaded = [load_run(t, runs) for t in targets]
    groups = group_runs(loaded)
    names = labels([g[0] for g in groups])
    if len(set(names)) < len(names):  # same method, same settings: tell them apart by folder
        names = [f"{n} ({g[0]['dir'].name})" for n, g in zip(names, groups)]
    names = [f"{n} ({len(g)} seeds)" if len(g) > 1 else n for n, g in zip(names, groups)]
    seeded = any(len(g) > 1 for g in groups)
    how = (f" — mean ± half-width of the {round(100 * level)} % {METHOD}" if seeded else "")
    probe, knn = family_intervals(groups, res.linear_top1, level), family_intervals(groups, res.knn_top1, level)
    parts = [f"Linear probe top-1 (%){how}", "", family_table(probe, names)]
    if any(knn):
        parts += ["", f"kNN top-1 (%){how}", "", family_table(knn, names)]
    lines = separable_lines(probe, names) if len(groups) > 1 else []
    if lines:
        parts += ["", "Best by mean linear probe, against the runner-up:", "", *lines]
    singles = [g[0] for g in groups]
    inv = invariance_tables(singles, names) if invariance else ""
    if inv:
        parts += ["", "Invariance" + (" (the first seed of each setting)" if seeded else ""), "", inv]
    if plot:
        from .eval.plots import plot_per_layer

        series = {n: {layer: i.mean for layer, i in per.items()} for n, per in zip(names, probe)}
        bands = {n: {layer: (i.lo, i.hi) for layer, i in per.items() if i.half is not None}
                 for n, per in zip(names, probe)}
        fig = plot_per_layer(series, title="linear probe top-1 by layer" + (f" ({round(100 * level)} % CI)" if seeded else ""),
                             bands=bands)
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot)
        import matplotlib.pyplot as plt

        plt.close(fig)
        parts += ["", f"plot: {plot}"]
    return "\n".join(parts)
