"""``sslray report <study>``: read a study's runs from MLflow and answer its question.

Prints a table (one row per trial: method, swept values, stop reason, objective, top-1 per layer)
and the best configuration; draws the metric against the swept variable (one line per layer) and
the per-layer curve of each method's best trial; saves the figures under ``reports/<study>/`` and
as artifacts of the study's parent run; prints the MLflow UI's addresses of the study's runs table
and of its compare view.
"""

from __future__ import annotations

from pathlib import Path

from .. import LAYERS
from ..errors import UserError
from ..table import layer_table
from ..tracking import Store, store_exists, tracking_uri, writable
from ..tracking.ui import compare_url, runs_url, ui_url
from .stops import Stop, StopReason
from .study import STUDY_ARTIFACT, Study, param_name


def study_runs(name: str, store: Store):
    """The newest study run of experiment ``name``, the study it ran (read back whole) and its trials."""
    exp = store.experiment(name, create=False)
    if exp is None:
        raise UserError(f"no study {name!r} in the MLflow store {store.uri}")
    parents = store.runs(exp, "tags.`sslray.role` = 'study'", order_by=["start_time DESC"], max_results=1)
    if not parents:
        raise UserError(f"experiment {name!r} has no study run (was it made by `sslray sweep`?)")
    parent = parents[0]
    text = store.read_text(parent.info.run_id, STUDY_ARTIFACT)
    if text is None:
        raise UserError(f"study {name!r}: its run has no {STUDY_ARTIFACT} (made by an older sslray; rerun the sweep)")
    return parent, Study.model_validate_json(text), store.children(exp, parent.info.run_id)


def _num(v):
    for cast in (int, float):
        try:
            return cast(v)
        except (TypeError, ValueError):
            pass
    return v


def report(name: str, out_dir: str = "reports", uri: str | None = None) -> dict:
    base = ui_url(tracking_uri(uri))  # a bad $SSLRAY_UI_URL fails here, before any work
    if not store_exists(uri):
        raise UserError(f"no study {name!r}: there is no MLflow store at {tracking_uri(uri)} (run `sslray sweep` here first)")
    store = Store(uri)
    parent, study, children = study_runs(name, store)
    if not writable(Path(out_dir) / name):
        raise UserError(f"report: cannot write the figures to {Path(out_dir) / name} (permissions)")
    mode, metric = study.objective.mode, study.objective.metric
    swept = [param_name(k) for k in study.space.params]
    x_key = param_name(study.report.x) if study.report.x else None
    families = list(study.report.families)
    rows = []
    for r in children:
        m, prm = r.data.metrics, r.data.params
        rows.append({"run": r.info.run_id, "trial": r.data.tags.get("sslray.trial_id", "")[-5:],
                     "method": prm.get("method", "?"),
                     "reason": StopReason.of(r.data.tags) or StopReason(Stop.RUNNING),
                     "swept": {k: _num(prm.get(k)) for k in swept if k in prm},
                     "objective": m.get(metric),
                     "transfer": {layer: m.get(f"transfer/{layer}/top1") for layer in LAYERS},
                     "knn": {layer: m.get(f"knn/{layer}/top1") for layer in LAYERS},
                     "invariance": {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("invariance/")}})
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r["objective"] is None, sign * (r["objective"] or 0)))
    print(f"study {name}: {study.question}")
    print(f"objective: {mode} {metric}   trials: {len(rows)}")

    def label(r):
        sw = " ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in r["swept"].items())
        return f"{r['trial']:<7}{r['method']:<13}{sw[:37]:<38}{r['reason'].label():<10}"

    print(layer_table([(label(r), r["transfer"]) for r in rows], corner=f"{'trial':<7}{'method':<13}{'swept':<38}{'stop':<10}",
                      layers=LAYERS, label_width=68))
    for r in rows:
        if r["reason"].stop is Stop.FAILED:
            print(f"  trial {r['trial']} {r['reason'].text()}")
    done = [r for r in rows if r["objective"] is not None]
    best = done[0] if done else None
    if best:
        print(f"best: {best['method']} {best['swept']}  {metric} = {100 * best['objective']:.1f}%  (run {best['run']})")
    if "invariance" in families:
        _print_invariance(done)
    out = Path(out_dir) / name
    figures = _plots(name, done, x_key, out, families) if done else []
    for f in figures:
        store.log_artifact(parent.info.run_id, f, "report")
    for f in figures:
        print(f"figure: {f}")
    exp = parent.info.experiment_id
    urls = {"runs": runs_url(base, exp, name, f"{mode} {metric}")}
    if children:
        urls["compare"] = compare_url(base, [r.info.run_id for r in children], [exp])
    for what, url in urls.items():
        print(f"MLflow {what}: {url}")
    return {"best": best, "rows": rows, "figures": [str(f) for f in figures], "urls": urls}


def _group(r: dict, x_key: str | None) -> str:
    """A trial's curve label: its method and every swept value except the plotted x."""
    return " ".join([r["method"]] + [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in r["swept"].items() if k != x_key])


def _best_per_group(rows: list[dict], x_key: str | None) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in rows:  # rows come sorted best first
        best.setdefault(_group(r, x_key), r)
    return best


def _transforms(rows: list[dict]) -> list[str]:
    return sorted({k.split("/")[0] for r in rows for k in r["invariance"]})


def _print_invariance(rows: list[dict]) -> None:
    """Per transform: the probe's top-1 at predicting it from each layer (chance = invariant)."""
    for t in _transforms(rows):
        have = [r for r in rows if f"{t}/chance" in r["invariance"]]
        print(f"invariance to {t}: probe top-1 predicting it (chance {100 * have[0]['invariance'][f'{t}/chance']:.0f} %)")
        table = [(_group(r, None), {layer: r["invariance"].get(f"{t}/{layer}/probe_top1") for layer in LAYERS})
                 for r in have]
        print(layer_table(table, corner="variant", layers=LAYERS))


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _style(ax, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, path: Path, figures: list[Path], title: str | None = None) -> None:
    """Title, lay out, write and close a figure; add it to ``figures``."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    figures.append(path)


def _plots(name: str, rows: list[dict], x_key: str | None, out: Path,
           families: list[str] = ("transfer", "knn")) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    best_of = _best_per_group(rows, x_key)
    # one panel per variant: the method plus its other swept choices (pirl similarity=cosine / l2)
    methods = sorted({_group(r, x_key) for r in rows if x_key in r["swept"]})
    if x_key and methods:
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), dpi=110, squeeze=False)
        for ax, method in zip(axes[0], methods):
            rs = [r for r in rows if _group(r, x_key) == method and x_key in r["swept"]]
            xs = [r["swept"][x_key] for r in rs]
            numeric = all(isinstance(v, (int, float)) for v in xs)
            order = sorted(range(len(rs)), key=lambda i: xs[i] if numeric else str(xs[i]))
            for layer in LAYERS:
                ys = [rs[i]["transfer"][layer] for i in order]
                if any(y is None for y in ys):
                    continue
                xv = [xs[i] if numeric else str(xs[i]) for i in order]
                ax.plot(xv, [100 * y for y in ys], marker="o", label=layer)
            if numeric and xs and min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
            ax.set_title(f"{method}", fontsize=9)
            ax.set_xlabel(x_key.split(".")[-1])
            _style(ax, "linear probe top-1 (%)")
        _save(fig, out / "metric_vs_swept.png", figures, f"{name}: transfer by layer against {x_key.split('.')[-1]}")
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    for label, best in best_of.items():
        layers = [layer for layer in LAYERS if best["transfer"][layer] is not None]
        if x_key in best["swept"]:
            label += f" ({x_key.split('.')[-1]}={_fmt(best['swept'][x_key])})"
        ax.plot(layers, [100 * best["transfer"][layer] for layer in layers], marker="o", label=label[:48])
    ax.set_title(f"{name}: best trial of each variant, by layer", fontsize=10)
    _style(ax, "linear probe top-1 (%)")
    _save(fig, out / "per_layer_best.png", figures)
    transforms = _transforms(rows) if "invariance" in families else []
    if transforms:  # how well each layer predicts each transform: chance = invariant, 100 % = covariant
        fig, axes = plt.subplots(1, len(transforms), figsize=(5.2 * len(transforms), 3.6), dpi=110, squeeze=False)
        for ax, t in zip(axes[0], transforms):
            chance = None
            for label, r in best_of.items():
                inv = r["invariance"]
                layers = [layer for layer in LAYERS if f"{t}/{layer}/probe_top1" in inv]
                if layers:
                    chance = inv.get(f"{t}/chance", chance)
                    ax.plot(layers, [100 * inv[f"{t}/{layer}/probe_top1"] for layer in layers], marker="o", label=label[:40])
            if chance is not None:
                ax.axhline(100 * chance, color="grey", ls=":", lw=1, label="chance (invariant)")
            ax.set_title(f"predicting the {t} from each layer", fontsize=9)
            _style(ax, "probe top-1 (%)")
        _save(fig, out / "invariance.png", figures, f"{name}: covariance (high) or invariance (chance) by layer")
    return figures
