"""Per-layer figures: accuracy by layer, the lectures' way to see where a representation peaks.

Figures are returned, not written: whoever owns the destination (a run folder, a report folder)
saves them.
"""

from __future__ import annotations


def plot_per_layer(results: dict[str, dict[str, float]], title: str = "", chance: float | None = None):
    """``results = {series: {layer: top1}}`` -> a matplotlib figure of top-1 (%) by layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .. import LAYERS

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for name, per_layer in results.items():
        layers = [layer for layer in LAYERS if layer in per_layer]
        ys = [100 * per_layer[layer] for layer in layers]
        ax.plot(layers, ys, marker="o", label=name)
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
