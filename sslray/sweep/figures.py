"""The figures of a study's report (``sslray report``): transfer by layer against the swept value,
one line per variant, the best configuration of each variant, the invariance measures, and
transfer against pretext epochs; with the floor and ceiling and, over seeds, their intervals. Also
the short labels the report's tables and figures share."""

from __future__ import annotations

from pathlib import Path

from .. import LAYERS
from ..eval import results as res

def _over_epochs(name: str, children: list, store, out: Path, level: float) -> Path:
    """``over_epochs.png``: for each method (one panel), every layer's linear-probe top-1 against
    pretext epochs (``at_epoch/transfer/<layer>/top1``), mean over the runs and seeds with its
    interval, beside the pretext task's own accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..stats import interval

    curves: dict = {}  # method -> layer -> epoch -> [values]
    pretext: dict = {}  # method -> epoch -> [train/acc]
    for r in children:
        method = r.data.params.get("method", "?")
        for layer in LAYERS:
            for m in store.history(r.info.run_id, res.at_epoch_key(layer)):
                curves.setdefault(method, {}).setdefault(layer, {}).setdefault(m.step, []).append(100 * m.value)
        if method in curves:
            for m in store.history(r.info.run_id, "train/acc"):
                pretext.setdefault(method, {}).setdefault(m.step + 1, []).append(100 * m.value)
    methods = sorted(curves)
    fig, axes = plt.subplots(1, len(methods) + 1, figsize=(4.6 * (len(methods) + 1), 3.6), dpi=110, squeeze=False)
    for ax, method in zip(axes[0], methods):
        for layer, by_epoch in curves[method].items():
            xs = sorted(by_epoch)
            stats = [interval(by_epoch[e], level) for e in xs]
            line, = ax.plot(xs, [s.mean for s in stats], marker="o", label=layer)
            if all(s.n > 1 for s in stats):
                ax.fill_between(xs, [s.mean - s.half for s in stats], [s.mean + s.half for s in stats],
                                color=line.get_color(), alpha=0.12, lw=0)
        ax.set_title(method, fontsize=9)
        ax.set_xlabel("pretext epochs")
        _style(ax, "linear probe top-1 (%)")
    from matplotlib.ticker import MaxNLocator

    for a in axes[0]:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax = axes[0][-1]
    for method in methods:
        xs = sorted(pretext.get(method, {}))
        ax.plot(xs, [sum(pretext[method][e]) / len(pretext[method][e]) for e in xs], marker=".", label=method)
    ax.set_title("the pretext task", fontsize=9)
    ax.set_xlabel("pretext epochs")
    _style(ax, "pretext accuracy (%)")
    path = out / "over_epochs.png"
    out.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    _save(fig, path, figures, f"{name}: transfer by layer against pretext epochs (mean, {round(100 * level)} % CI)")
    return path


def _group(r: dict, x_key: str | None) -> str:
    """A trial's curve label: its method and every swept value except the plotted x."""
    return " ".join([r["method"]] + _pairs(r["swept"], x_key))


def _best_per_group(rows: list[dict], x_key: str | None) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in rows:  # rows come sorted best first
        best.setdefault(_group(r, x_key), r)
    return best


def _transforms(rows: list[dict]) -> list[str]:
    return sorted({t for r in rows for t in res.transforms(r["invariances"])})


def _fmt(v) -> str:
    """A swept value, short: a source ``latest:supervised?label_noise=0.5`` by its query, a path by its
    last part."""
    if isinstance(v, float):
        return f"{v:.3g}"
    text = str(v)
    if "?" in text:
        return _xtick(text)
    return Path(text).name if text.startswith("/") else text


def _pairs(swept: dict, skip: str | None = None) -> list[str]:
    """``key=value`` of every swept value that applies (``when`` leaves the others None)."""
    return [f"{k.split('.')[-1]}={_fmt(v)}" for k, v in swept.items() if k != skip and v not in (None, "None")]


def variant_styles(labels: list[str]) -> dict[str, dict]:
    """Matplotlib style per variant label (``"<method> <swept values>"``): one colour per method, a
    line style and marker per variant of that method, so that 15 variants stay apart where one
    10-colour cycle repeats."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(label.split()[0] if label.split() else "" for label in labels))
    colours = plt.get_cmap("tab10")
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    seen: dict[str, int] = {}
    out = {}
    for label in labels:
        m = label.split()[0] if label.split() else ""
        k = seen.get(m, 0)
        seen[m] = k + 1
        out[label] = {"color": colours(methods.index(m) % 10), "linestyle": styles[k % 4][0],
                      "marker": styles[k % 4][1]}
    return out


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


def _frame_lines(ax, frame: dict, layer: str | None = None) -> None:
    """Floor and ceiling: per-layer curves (``layer=None``) or one layer's horizontal lines, drawn
    over what the axes already hold; the region below the floor is shaded."""
    floor = None
    for (method, role), per in frame.items():
        style = {"color": "grey", "ls": ":" if role == "floor" else "--", "lw": 1.2}
        if layer is None:
            layers = [lay for lay in LAYERS if per.get(lay) is not None]
            ys = [100 * per[lay] for lay in layers]
            ax.plot(layers, ys, label=f"{method} ({role})", **style)
            if role == "floor":
                floor = ys
        elif per.get(layer) is not None:
            ax.axhline(100 * per[layer], label=f"{method} ({role}), {layer}", **style)
            if role == "floor":
                floor = 100 * per[layer]
    if floor is not None:
        bottom, top = ax.get_ylim()
        if layer is None:
            ax.fill_between(range(len(floor)), bottom, floor, color="grey", alpha=0.1, lw=0)
        else:
            ax.axhspan(bottom, floor, color="grey", alpha=0.1, lw=0)
        ax.set_ylim(bottom, top)


def _x_scale(ax, xs: list) -> None:
    """A swept number spanning 8x or more (batch 32 ... 512, K 16 ... 4,096) on a log axis, base 2
    when every value is a power of two, ticked at the values themselves."""
    if not xs or min(xs) <= 0 or max(xs) / min(xs) < 8:
        return
    pow2 = all(float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in xs)
    ax.set_xscale("log", base=2 if pow2 else 10)
    values = sorted(set(xs))
    if len(values) <= 8:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()


def _xtick(value) -> str:
    """A swept value as a tick: a source named ``latest:supervised?label_noise=0.5`` by its query."""
    text = str(value)
    return text.split("?", 1)[1] if "?" in text else text


def _plots(name: str, rows: list[dict], x_key: str | None, out: Path,
           families: list[str] = res.DEFAULT_FAMILIES, frame: dict | None = None,
           metric: str = "") -> list[Path]:
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
                xv = [xs[i] if numeric else _xtick(xs[i]) for i in order]
                line, = ax.plot(xv, [100 * y for y in ys], marker="o", label=layer)
                bands = [rs[i].get("band", {}).get(layer) for i in order]
                if all(bands):
                    ax.fill_between(xv if numeric else range(len(xv)), [100 * b[0] for b in bands],
                                    [100 * b[1] for b in bands], color=line.get_color(), alpha=0.08, lw=0)
            if numeric:
                _x_scale(ax, xs)
            if frame and res.objective_layer(metric):
                _frame_lines(ax, frame, res.objective_layer(metric))
            ax.set_title(f"{method}", fontsize=9)
            ax.set_xlabel(x_key.split(".")[-1])
            _style(ax, "linear probe top-1 (%)")
        _save(fig, out / "metric_vs_swept.png", figures, f"{name}: transfer by layer against {x_key.split('.')[-1]}")
        layer = res.objective_layer(metric)
        if len(methods) > 1 and layer:  # the objective's layer, a line per variant
            fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
            for method in methods:
                rs = [r for r in rows if _group(r, x_key) == method and x_key in r["swept"]
                      and r["transfer"].get(layer) is not None]
                xs = [r["swept"][x_key] for r in rs]
                numeric = all(isinstance(v, (int, float)) for v in xs)
                order = sorted(range(len(rs)), key=lambda i: xs[i] if numeric else str(xs[i]))
                xv = [xs[i] if numeric else _xtick(xs[i]) for i in order]
                line, = ax.plot(xv, [100 * rs[i]["transfer"][layer] for i in order], marker="o", label=method)
                bands = [rs[i].get("band", {}).get(layer) for i in order]
                if bands and all(bands):
                    ax.errorbar(xv, [100 * rs[i]["transfer"][layer] for i in order],
                                yerr=[[100 * (rs[i]["transfer"][layer] - b[0]) for i, b in zip(order, bands)],
                                      [100 * (b[1] - rs[i]["transfer"][layer]) for i, b in zip(order, bands)]],
                                fmt="none", ecolor=line.get_color(), capsize=3, lw=1)
            swept = [r["swept"][x_key] for r in rows if x_key in r["swept"]]
            if swept and all(isinstance(v, (int, float)) for v in swept):
                _x_scale(ax, swept)
            if frame:
                _frame_lines(ax, frame, layer)
            ax.set_xlabel(x_key.split(".")[-1])
            ax.set_title(f"{layer}: one line per variant", fontsize=9)
            _style(ax, "linear probe top-1 (%)")
            _save(fig, out / "objective_by_variant.png", figures,
                  f"{name}: {layer} against {x_key.split('.')[-1]}, one line per variant")
    many = len(best_of) > 6  # a wider figure, its legend beside the axes
    fig, ax = plt.subplots(figsize=(9.5, 4.2) if many else (5.5, 3.6), dpi=110)
    looks = variant_styles(list(best_of))
    for label, best in best_of.items():
        look = looks[label]
        layers = [layer for layer in LAYERS if best["transfer"][layer] is not None]
        if x_key in best["swept"]:
            label += f" ({x_key.split('.')[-1]}={_fmt(best['swept'][x_key])})"
        ys = [100 * best["transfer"][layer] for layer in layers]
        band = best.get("band", {})
        if all(layer in band for layer in layers):
            err = [[y - 100 * band[layer][0] for y, layer in zip(ys, layers)],
                   [100 * band[layer][1] - y for y, layer in zip(ys, layers)]]
            ax.errorbar(layers, ys, yerr=err, capsize=3, label=label[:48], ms=4, **look)
        else:
            ax.plot(layers, ys, label=label[:48], ms=4, **look)
    if frame:
        _frame_lines(ax, frame)
    seeded = any(r.get("band") for r in best_of.values())
    ax.set_title(f"{name}: best {'configuration' if seeded else 'trial'} of each variant, by layer"
                 + ("\n(mean and 95 % interval over seeds)" if seeded else ""), fontsize=9)
    _style(ax, "linear probe top-1 (%)")
    if many:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    _save(fig, out / "per_layer_best.png", figures)
    transforms = _transforms(rows) if res.draws_invariance(families) else []
    if transforms:  # how well each layer predicts each transform: chance = invariant, 100 % = covariant
        fig, axes = plt.subplots(1, len(transforms), figsize=(5.2 * len(transforms), 3.6), dpi=110, squeeze=False)
        for ax, t in zip(axes[0], transforms):
            chance = None
            for label, r in best_of.items():
                inv = r["invariances"]
                layers = [layer for layer in LAYERS if (t, layer, "probe_top1") in inv]
                if layers:
                    chance = inv.get((t, None, "chance"), chance)
                    ys = [100 * inv[t, layer, "probe_top1"] for layer in layers]
                    line, = ax.plot(layers, ys, marker="o", label=label[:40])
                    band = r.get("invariance_band") or {}
                    if all((t, layer, "probe_top1") in band for layer in layers):  # seeds: the interval
                        lo = [100 * band[t, layer, "probe_top1"][0] for layer in layers]
                        hi = [100 * band[t, layer, "probe_top1"][1] for layer in layers]
                        ax.errorbar(layers, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]],
                                    fmt="none", ecolor=line.get_color(), capsize=3, lw=1, alpha=0.7)
            if chance is not None:
                ax.axhline(100 * chance, color="grey", ls=":", lw=1, label="chance (invariant)")
            ax.set_title(f"predicting the {t} from each layer", fontsize=9)
            _style(ax, "probe top-1 (%)")
        _save(fig, out / "invariance.png", figures, f"{name}: covariance (high) or invariance (chance) by layer")
    return figures
