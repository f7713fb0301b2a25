"""``sslray report <study>``: read a study's runs from MLflow and answer its question.

Prints a table (one row per trial: method, swept values, stop reason, objective, top-1 per layer)
and the best configuration; draws the metric against the swept variable (one line per layer) and
the per-layer curve of each method's best trial; saves the figures under ``reports/<study>/`` and
as artifacts of the study's parent run; prints the MLflow UI's addresses of the study's runs table
and of its compare view.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

from .. import LAYERS
from ..errors import UserError
from ..eval import results as res
from ..stats import METHOD, interval, layer_intervals, separability
from ..table import layer_table
from ..paths import check_output
from ..tracking import Store, store_exists, tracking_uri
from ..tracking.ui import compare_url, runs_url, ui_url
from .stops import Stop, StopReason
from .figures import _group, _over_epochs, _pairs, _plots, _transforms
from .health_figure import collapse_lines, health_figure
from .shares import print_shares, shares_figure
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
    check_output(Path(out_dir) / name, "folder", what="report: cannot write the figures to")
    if not store_exists(uri):
        raise UserError(f"no study {name!r}: there is no MLflow store at {tracking_uri(uri)} (run `sslray sweep` here first)")
    store = Store(uri)
    parent, study, children = study_runs(name, store)
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
                     "seed": _num(prm.get("seed", 0)),
                     "swept": {k: _num(prm.get(k)) for k in swept if k in prm},
                     "objective": m.get(metric),
                     **numbers(m), "on": evaluated_on(prm)})
    sign = -1 if mode == "max" else 1
    rows.sort(key=lambda r: (r["objective"] is None, sign * (r["objective"] or 0)))
    print(f"study {name}: {study.question}")
    print(f"objective: {mode} {metric}   trials: {len(rows)}")
    on = Counter(r["on"] for r in rows)
    if on:  # which collection's test split every number is on (eval.data, else the pretraining data)
        print("evaluated on: " + ", ".join(what if len(on) == 1 else f"{what} ({n} trials)" for what, n in on.items()))

    def label(r):
        sw = " ".join(_pairs(r["swept"]))
        return f"{r['trial']:<7}{r['method']:<13}{sw[:37]:<38}{r['reason'].label():<10}"

    done = [r for r in rows if r["objective"] is not None]
    configs = configurations(done, study.report.confidence, mode)
    frame_all = frame_metrics(parent, store)  # the floor's and ceiling's runs, read once
    frame = frame_of(frame_all)
    seeded = study.budget.seeds > 1 or any(c["n"] > 1 for c in configs)
    if not seeded:
        table = [(label(r), r["transfer"]) for r in rows]
        table += [(f"{'':<7}{m:<13}{'(' + role + ')':<38}{'':<10}", v) for (m, role), v in frame.items()]
        print(layer_table(table, corner=f"{'trial':<7}{'method':<13}{'swept':<38}{'stop':<10}", layers=LAYERS,
                          label_width=68))
    else:  # the seeds of a configuration are one row: mean ± interval, never rivals
        stops = ", ".join(f"{n} {what}" for what, n in Counter(r["reason"].label() for r in rows).items())
        print(f"runs: {len(rows)} ({stops}); each row: a configuration's completed seeds, "
              f"mean ± half-width of the {round(100 * study.report.confidence)} % {METHOD}")
        table = [(f"{c['method']:<13}{_swept(c['swept'])[:37]:<38}{c['n']:>3}", c["intervals"]) for c in configs]
        table += [(f"{m:<13}{'(' + role + ')':<38}{1:>3}", {k: interval([x]) for k, x in v.items() if x is not None})
                  for (m, role), v in frame.items()]
        print(layer_table(table, corner=f"{'method':<13}{'swept':<38}{'n':>3}", layers=LAYERS, label_width=56,
                          cell=lambda i: i.text()))
    for r in rows:
        if r["reason"].stop is Stop.FAILED:
            print(f"  trial {r['trial']} {r['reason'].text()}")
    best = configs[0] if configs else None
    if best:
        obj = best["objective"]
        seeds = f", {best['n']} seeds" if best["n"] > 1 else ", one seed"
        print(f"best: {best['method']} {_swept(best['swept'])}  {metric} = {obj.text()}%{seeds}  "
              f"(run {best['runs'][0]['run']})")
        layer = res.objective_layer(metric)
        spread = frame_spread(configs, layer, study.report.confidence) if layer and seeded else None
        for (m, role), per in frame.items():
            if layer and per.get(layer) is not None:
                print(f"against the {role} ({m}, {100 * per[layer]:.1f} at {layer}): the best configuration is "
                      f"{_against(obj, per[layer], best['n'], spread)}")
        if layer and seeded:
            print(frame_answer(configs, frame, layer, study.report.confidence))
    def named(c):
        return _label(c), c["objective"]

    if len(configs) > 1:
        print(f"answer ({metric}): " + separability(named(configs[0]), named(configs[1]), mode))
    best_of_method = {}
    for c in configs:  # best first
        best_of_method.setdefault(c["method"], c)
    if len(best_of_method) > 1 and configs[1]["method"] == configs[0]["method"]:  # else: the line above
        first, second = list(best_of_method.values())[:2]
        print("between methods (the best configuration of each): " + separability(named(first), named(second), mode))
    if res.draws_invariance(families):
        _print_invariance(done, study.report.confidence)
    _print_protocols(done, frame_all, study.report.confidence)
    neighbours: dict[str, list[dict]] = {}
    for r in done:
        if r["retrieved"]:
            neighbours.setdefault(_group(r, None), []).append(r["retrieved"])
    share_layer = res.layer_of(metric) or "res4"
    shared = print_shares(neighbours, frame_all, share_layer, study.report.confidence) if neighbours else []
    out = Path(out_dir) / name
    figures = _plots(name, [c["row"] for c in configs], x_key, out, families, frame, metric) if configs else []
    if shared:
        figures += [f for f in [shares_figure(name, neighbours, frame_all, out, study.report.confidence)] if f]
    if any(res.is_at_epoch(k) for r in children for k in r.data.metrics):
        figures.append(_over_epochs(name, children, store, out, study.report.confidence))
    tags = {r.info.run_id: r.data.tags for r in children}  # health per epoch, collapsed runs marked
    tagged = [{**r, "tags": tags.get(r["run"], {})} for r in rows]
    for line in collapse_lines(tagged, lambda r: _group(r, None)):
        print(line)
    health = health_figure(name, tagged, store, out, lambda r: _group(r, None))
    figures += [health] if health else []
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
    return {"best": best, "configurations": configs, "rows": rows, "figures": [str(f) for f in figures], "urls": urls}


def evaluated_on(params: dict) -> str:
    """The labelled collection a run's numbers are on, from its logged params: ``eval.data`` when
    the run names one (pretrained elsewhere, maybe without labels), else its own data."""
    prefix = "eval.data." if params.get("eval.data.name", "None") != "None" else "data."
    name, root = params.get(prefix + "name", "?"), params.get(prefix + "root", "None")
    return name + (f" {Path(root).name}" if root not in ("None", "") else "") + \
        (" (eval.data)" if prefix == "eval.data." else "")


def frame_metrics(parent, store) -> dict[tuple[str, str], dict[str, float]]:
    """Every metric of the study's floor and ceiling, ``{("random", "floor"): metrics, ...}``, from
    the baseline runs its parent run names (``sslray.floor_run``, ``sslray.ceiling_run``)."""
    out = {}
    for role, method in (("floor", "random"), ("ceiling", "supervised")):
        run_id = parent.data.tags.get(f"sslray.{role}_run")
        if run_id and store.has_run(run_id):
            out[(method, role)] = store.run(run_id).data.metrics
    return out


def frame_of(frame_all: dict) -> dict[tuple[str, str], dict[str, float | None]]:
    """The floor's and ceiling's per-layer probe, ``{("random", "floor"): {layer: top1}, ...}``,
    from their metrics (:func:`frame_metrics`)."""
    return {key: _layers(res.linear_top1(m)) for key, m in frame_all.items()}


def _layers(per: dict[str, float]) -> dict[str, float | None]:
    return {layer: per.get(layer) for layer in LAYERS}


def numbers(m: dict[str, float]) -> dict:
    """What a report reads of a run's metrics, from its results (:mod:`sslray.eval.results`): the
    per-layer linear probe (``transfer``) and kNN top-1 (``knn_top1``), the invariance measures
    (``invariances``: ``{(transform, layer, metric): value}``), and the run's metrics where it measured
    fine-tuning or low-shot (``protocols``) or retrieval (``retrieved``)."""
    return {"transfer": _layers(res.linear_top1(m)), "knn_top1": _layers(res.knn_top1(m)), "invariances": res.invariance(m),
            "protocols": m if res.finetune_top1(m) is not None or res.lowshot(m) else {},
            "retrieved": m if res.retrieval(m) else {}}


def configurations(done: list[dict], level: float, mode: str = "max") -> list[dict]:
    """The completed runs grouped by configuration (method and swept values; seeds apart), best
    mean objective first: each with its runs, ``n``, the objective's and every layer's interval, and
    a ``row`` (means, bands, the first seed's invariance) for the figures."""
    groups: dict[str, list[dict]] = {}
    for r in done:
        groups.setdefault(f"{r['method']}|{sorted(r['swept'].items())}", []).append(r)
    out = []
    for runs in groups.values():
        per = {layer: interval([r["transfer"][layer] for r in runs if r["transfer"][layer] is not None], level)
               for layer in LAYERS if any(r["transfer"][layer] is not None for r in runs)}
        first = runs[0]
        inv = {k: interval([r["invariances"][k] for r in runs if k in r["invariances"]], level)
               for k in {k for r in runs for k in r["invariances"]}}
        out.append({"method": first["method"], "swept": first["swept"], "runs": runs, "n": len(runs),
                    "objective": interval([r["objective"] for r in runs], level), "intervals": per,
                    "row": {**first, "transfer": {layer: per[layer].mean if layer in per else None for layer in LAYERS},
                            "band": {layer: (i.lo, i.hi) for layer, i in per.items() if i.half is not None},
                            "invariances": {k: i.mean for k, i in inv.items()},
                            "invariance_band": {k: (i.lo, i.hi) for k, i in inv.items() if i.half is not None}}})
    out.sort(key=lambda c: -c["objective"].mean if mode == "max" else c["objective"].mean)
    return out


def _against(obj, value: float, n: int = 1, spread: Spread | None = None) -> str:
    """Where a configuration's mean of ``n`` seeds lies against a floor's or ceiling's single run.
    With ``spread`` (:func:`frame_spread`) the single run is given the seeds' pooled sd, as in the
    floor-and-ceiling answer line, so the two lines never disagree; without it (no seeds to measure
    a spread), the configuration's own interval against the value."""
    if obj.half is None:
        return "above it (one seed, no interval)" if obj.mean > value else "not above it (one seed, no interval)"
    if spread is not None:
        gap, need = obj.mean - value, spread.need(n)
        said = f" ({100 * gap:+.1f}, ±{100 * need:.1f} needed)"
        if abs(gap) <= need:
            return "not separable from it at this budget" + said
        return ("above it, separably" if gap > 0 else "below it, separably") + said
    if obj.lo > value:
        return "above it, separably"
    if obj.hi < value:
        return "below it, separably"
    return "not separable from it at this budget"


class Spread(NamedTuple):
    """The spread a floor's or ceiling's single run is given: the configurations' pooled sd of their
    seeds at one layer, on ``df`` degrees of freedom, with its Student-t quantile ``t``."""
    t: float
    sd: float
    df: int

    def need(self, n: int) -> float:
        """The gap a mean of ``n`` seeds must clear over a single run."""
        return self.t * self.sd * (1 / n + 1) ** 0.5


def frame_spread(configs: list[dict], layer: str, level: float = 0.95) -> Spread | None:
    """The :class:`Spread` of the configurations' seeds at ``layer`` (None: no seeds to pool)."""
    import math

    from ..stats import t_quantile

    seeds = [[r["transfer"][layer] for r in c["runs"] if r["transfer"].get(layer) is not None] for c in configs]
    df = sum(len(v) - 1 for v in seeds if v)
    if df == 0:
        return None
    sd = math.sqrt(sum(sum((x - sum(v) / len(v)) ** 2 for x in v) for v in seeds if v) / df)
    return Spread(t_quantile((1 + level) / 2, df), sd, df)


def frame_answer(configs: list[dict], frame: dict, layer: str, level: float = 0.95) -> str:
    """The answer line on the floor and ceiling at ``layer``: is the ceiling separable above the
    floor, and which configurations are? The floor and ceiling are one run each, so their spread is
    taken to be the configurations' (the pooled sd of their seeds at ``layer``, on the pooled
    degrees of freedom): two means differ separably when the gap exceeds the half-width of that
    pooled Student-t interval of their difference (a single run counts as n = 1)."""
    floor = next((v.get(layer) for (m, role), v in frame.items() if role == "floor"), None)
    ceiling = next((v.get(layer) for (m, role), v in frame.items() if role == "ceiling"), None)
    seeds = [[r["transfer"][layer] for r in c["runs"] if r["transfer"].get(layer) is not None] for c in configs]
    spread = frame_spread(configs, layer, level)
    if floor is None or spread is None:
        return f"answer (floor and ceiling, {layer}): no floor or no seeds to measure the spread with"
    need = spread.need

    parts = []
    if ceiling is not None:
        gap = ceiling - floor
        parts.append(f"the ceiling is {100 * gap:+.1f} points from the floor ({100 * ceiling:.1f} against "
                     f"{100 * floor:.1f}, one run each; ±{100 * need(1):.1f} needed): "
                     + ("separably above it" if gap > need(1) else "not separable at this budget"))
    above = [_label(c) + f" ({100 * (c['intervals'][layer].mean - floor):+.1f})"
             for c, v in zip(configs, seeds) if v and c["method"] not in ("random", "supervised")
             and c["intervals"][layer].mean - floor > need(len(v))]
    best = next(((c, v) for c, v in zip(configs, seeds) if v), None)
    parts.append("configurations separably above the floor: " + (", ".join(above) if above else "none") +
                 ("" if above or best is None else f" (best {_label(best[0])} "
                  f"{100 * (best[0]['intervals'][layer].mean - floor):+.1f}, ±{100 * need(len(best[1])):.1f} needed)"))
    return (f"answer (floor and ceiling, {layer}): " + "; ".join(parts) +
            f" ({round(100 * level)} %, their spread taken as the seeds' pooled sd {100 * spread.sd:.1f} on "
            f"{spread.df} df)")


def _label(config: dict) -> str:
    """A configuration by its method and swept values (``simclr norm=group``; ``barlow``)."""
    return f"{config['method']} {_swept(config['swept'])}".strip()


def _swept(swept: dict) -> str:
    return " ".join(_pairs(swept))


def _print_protocols(rows: list[dict], frame: dict, level: float = 0.95) -> None:
    """When the study asked for them (``eval.protocols``): fine-tuning's test top-1 (all labels,
    then each low-shot subset), and each low-shot subset's linear probe per layer; a
    configuration's seeds are one row (mean ± interval), beside the floor and ceiling."""
    def read(m: dict) -> dict:  # {column: top1} of fine-tuning, and each low-shot subset
        low = res.lowshot(m)
        return {"all labels": res.finetune_top1(m), **{s: v.get("whole_trunk") for s, v in low.items()}, "": low}

    if not any(r["protocols"] for r in rows):
        return
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(_group(r, None), []).append(read(r["protocols"]))
    entries = [(f"{name} ({len(rs)})" if len(rs) > 1 else name, rs) for name, rs in groups.items()]
    entries += [(f"{m} ({role})", [read(metrics)]) for (m, role), metrics in frame.items()]
    asked = [read(r["protocols"]) for r in rows]
    subsets = sorted({s for m in asked for s in m[""]},
                     key=lambda s: next((m[""][s].get("images", 0) for _, ms in entries for m in ms if s in m[""]), 0))
    cols = [c for c in ("all labels", *subsets) if any(m.get(c) is not None for m in asked)]

    def cells(ms: list[dict], named: list[str]) -> dict:
        out = {}
        for col in named:
            vals = [m[col] for m in ms if m.get(col) is not None]
            if vals:
                out[col] = interval(vals, level)
        return out

    def images(s: str) -> str:
        n = {int(m[""][s]["images"]) for _, ms in entries for m in ms if "images" in m[""].get(s, {})}
        return f"{n.pop()} labelled images" if len(n) == 1 else "labelled images by run"

    width = max(len(label) for label, _ in entries) + 2
    if cols:
        print("fine-tuning the whole trunk: test top-1 % trained on " + ", ".join(
            c if c == "all labels" else f"{c} ({images(c)})" for c in cols))
        print(layer_table([(label, cells(ms, cols)) for label, ms in entries], corner="", layers=list(cols),
                          label_width=width, cell=lambda i: i.text()))
    for s in subsets:
        table = [(label, layer_intervals(ms, lambda m, layer: m[""].get(s, {}).get("per_layer", {}).get(layer), level))
                 for label, ms in entries]
        if any(t for _, t in table):
            print(f"low-shot {s} ({images(s)}): linear probe test top-1 % per layer")
            print(layer_table(table, corner="", layers=[layer for layer in LAYERS if any(layer in t for _, t in table)],
                              label_width=width, cell=lambda i: i.text()))


def _print_invariance(rows: list[dict], level: float = 0.95) -> None:
    """Per transform: the probe's top-1 at predicting it from each layer (chance = invariant); the
    seeds of a configuration are one row, mean ± interval."""
    for t in _transforms(rows):
        have = [r for r in rows if (t, None, "chance") in r["invariances"]]
        print(f"invariance to {t}: probe top-1 predicting it (chance {100 * have[0]['invariances'][t, None, 'chance']:.0f} %)")
        groups: dict[str, list[dict]] = {}
        for r in have:
            groups.setdefault(_group(r, None), []).append(r)
        table = []
        for name, rs in groups.items():
            cells = layer_intervals(rs, lambda r, layer: r["invariances"].get((t, layer, "probe_top1")), level)
            table.append((f"{name} ({len(rs)})" if len(rs) > 1 else name, cells))
        print(layer_table(table, corner="variant (seeds)", layers=LAYERS, label_width=32, cell=lambda i: i.text()))

