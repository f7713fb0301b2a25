"""Per-layer figures: accuracy by layer, the lectures' way to see where a representation peaks.

Figures are returned, not written: whoever owns the destination (a run folder, a report folder)
saves them.
"""

from __future__ import annotations


def plot_per_layer(results: dict[str, dict[str, float]], title: str = "", chance: float | None = None,
                   bands: dict[str, dict[str, tuple[float, float]]] | None = None):
    """``results = {series: {layer: top1}}`` -> a matplotlib figure of top-1 (%) by layer.

    ``bands = {series: {layer: (lo, hi)}}`` draws each series' confidence interval as error bars
    and a shaded band around its line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import LAYERS

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, per_layer in results.items():
        layers = [layer for layer in LAYERS if layer in per_layer]
        ys = [100 * per_layer[layer] for layer in layers]
        line, = ax.plot(layers, ys, marker="o", label=name)
        band = (bands or {}).get(name) or {}
        if all(layer in band for layer in layers) and band:
            lo = [100 * band[layer][0] for layer in layers]
            hi = [100 * band[layer][1] for layer in layers]
            ax.fill_between(range(len(layers)), lo, hi, color=line.get_color(), alpha=0.15, lw=0)
            ax.errorbar(layers, ys, yerr=[[y - a for y, a in zip(ys, lo)], [b - y for y, b in zip(ys, hi)]],
                        fmt="none", ecolor=line.get_color(), capsize=3, lw=1)
        for x, y in zip(layers, ys):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=7)
    if chance is not None:
        ax.axhline(100 * chance, color="grey", ls=":", lw=1, label="chance")
    ax.set_xlabel("layer")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_over_epochs(transfer: dict[int, dict[str, float]], pretext: dict[int, float] | None = None, title: str = ""):
    """``transfer = {epoch: {layer: top1}}`` -> top-1 (%) of every layer against pretext epochs,
    and beside it the pretext task's own accuracy by epoch (``pretext = {epoch: acc}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import LAYERS

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120, gridspec_kw={"width_ratios": [3, 2]})
    epochs = sorted(transfer)
    for layer in [layer for layer in LAYERS if any(layer in transfer[e] for e in epochs)]:
        xs = [e for e in epochs if layer in transfer[e]]
        ax.plot(xs, [100 * transfer[e][layer] for e in xs], marker="o", label=layer)
    ax.set_xlabel("pretext epochs")
    ax.set_ylabel("linear probe top-1 (%)")
    ax.set_title("transfer by layer", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if pretext:
        xs = sorted(pretext)
        ax2.plot(xs, [100 * pretext[e] for e in xs], marker=".", color="black")
    from matplotlib.ticker import MaxNLocator

    for a in (ax, ax2):
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel("pretext epochs")
    ax2.set_ylabel("pretext task accuracy (%)")
    ax2.set_title("the pretext task", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
