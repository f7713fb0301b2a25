"""``sslray compare``: finished runs side by side, layer by layer.

Reads each run folder's ``transfer.json`` (written by the per-layer evaluation) and
``config.yaml``, and prints Markdown tables (paste-ready for a README or a paper draft): linear
probe and kNN top-1 by layer, and, where runs measured them, the invariance measures per
transform. Rows are labelled by method plus the settings in which runs of one method differ
(``jigsaw permutations=100``), so a comparison never hides what changed. ``--plot`` draws the
per-layer curves of every run in one figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import LAYERS
from .errors import UserError
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
    for r in runs:
        cfg = r["config"]
        method = cfg.get("method", r["dir"].name)
        peers = [p["config"] for p in runs if p["config"].get("method", p["dir"].name) == method]
        differ = []
        if len({p.get("epochs") for p in peers}) > 1:
            differ.append(f"{cfg.get('epochs')} ep")
        settings = cfg.get("settings") or {}
        for key, value in settings.items():
            if len({json.dumps((p.get("settings") or {}).get(key), sort_keys=True) for p in peers}) > 1:
                differ.append(f"{key}={_short(value)}")
        out.append(" ".join([method, *differ]))
    return out


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "+".join(str(k) for k in value)
    if isinstance(value, str) and "/" in value:
        return Path(value).name.split("-")[0]  # a source run folder: its method
    return str(value)


def family_table(runs: list[dict[str, Any]], names: list[str], family: str = "transfer") -> str:
    rows = [(name, {layer: r["metrics"].get(f"{family}/{layer}/top1") for layer in LAYERS})
            for name, r in zip(names, runs)]
    return layer_table(rows, style="markdown", corner="run")


def invariance_tables(runs: list[dict[str, Any]], names: list[str]) -> str:
    """Per transform: each layer's mean cosine of f(I), f(I^t) and the transform probe's top-1."""
    transforms = sorted({k.split("/")[1] for r in runs for k in r["metrics"] if k.startswith("invariance/")})
    blocks = []
    for t in transforms:
        have = [(n, r) for n, r in zip(names, runs) if f"invariance/{t}/chance" in r["metrics"]]
        chance = have[0][1]["metrics"][f"invariance/{t}/chance"]
        rows = [(name, {layer: (r["metrics"][f"invariance/{t}/{layer}/cosine"],
                                r["metrics"].get(f"invariance/{t}/{layer}/probe_top1"))
                        for layer in LAYERS if f"invariance/{t}/{layer}/cosine" in r["metrics"]}) for name, r in have]
        title = f"**{t}** — cosine(f(I), f(I^t)) / probe top-1 predicting the {t} (chance {pct(chance)} %)"
        table = layer_table(rows, style="markdown", corner="run", cell=lambda v: f"{v[0]:.2f} / {pct(v[1], '–')}")
        blocks.append(f"{title}\n\n{table}")
    return "\n\n".join(blocks)


def compare(targets: list[str], runs: str = "runs", plot: str | None = None, invariance: bool = True) -> str:
    loaded = [load_run(t, runs) for t in targets]
    names = labels(loaded)
    if len(set(names)) < len(names):  # same method, same settings: tell them apart by folder
        names = [f"{n} ({r['dir'].name})" for n, r in zip(names, loaded)]
    parts = ["Linear probe top-1 (%)", "", family_table(loaded, names, "transfer"), "",
             "kNN top-1 (%)", "", family_table(loaded, names, "knn")]
    inv = invariance_tables(loaded, names) if invariance else ""
    if inv:
        parts += ["", "Invariance", "", inv]
    if plot:
        from .eval.plots import plot_per_layer

        series = {n: {layer: r["metrics"][f"transfer/{layer}/top1"] for layer in LAYERS
                      if f"transfer/{layer}/top1" in r["metrics"]} for n, r in zip(names, loaded)}
        fig = plot_per_layer(series, title="linear probe top-1 by layer")
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(plot)
        import matplotlib.pyplot as plt

        plt.close(fig)
        parts += ["", f"plot: {plot}"]
    return "\n".join(parts)
