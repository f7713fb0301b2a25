"""What the nearest neighbours share, in a study's report: when its runs measured retrieval on data
with recorded factors (``eval.protocols`` with ``retrieval``), a table at one layer (the class: the
share of the 8 nearest of the query's class; every factor: how much more the neighbours share it
than random images do, x 100: 0 = chance, 100 = identical) and ``shares.png``, the factors the
lectures ask about, layer by layer. A configuration's seeds are one row (mean ± interval), beside
the random floor and the supervised ceiling."""

from __future__ import annotations

from pathlib import Path

from .. import LAYERS
from ..eval.results import retrieval
from ..stats import interval
from ..table import layer_table

#: columns in the order a reader asks: the class, the pose, where, the background, the object's look
ORDER = ("class", "swing", "limb", "x", "y", "bg_hue", "texture", "light", "hue", "scale", "angle", "brightness")
NAMES = {"class": "class (precision@8)", "swing": "pose: swing", "limb": "pose: limb angle", "x": "position x",
         "y": "position y", "bg_hue": "background colour", "texture": "background texture", "light": "lighting",
         "hue": "object colour", "scale": "scale", "angle": "angle", "brightness": "brightness"}
#: the table's column heads (the figure's panels are titled with NAMES)
SHORT = {"class": "class", "swing": "swing", "limb": "limb", "x": "x", "y": "y", "bg_hue": "bg colour",
         "texture": "bg texture", "light": "light", "hue": "obj colour", "scale": "scale", "angle": "angle",
         "brightness": "brightness"}
PANELS = ("class", "swing", "limb", "x", "bg_hue", "hue")


def share_of(metrics: dict, layer: str, factor: str) -> float | None:
    """A run's share of ``factor`` at ``layer`` (the class: precision@8), from its retrieval results."""
    got = retrieval(metrics).get(layer, {})
    return got.get("precision_at_8" if factor == "class" else f"shares/{factor}")


def entries(groups: dict[str, list[dict]], frame_all: dict) -> list[tuple[str, list[dict]]]:
    """``[(label, [metrics of each seed])]``: the study's configurations, then its floor and ceiling."""
    out = [(f"{name} ({len(ms)})" if len(ms) > 1 else name, ms) for name, ms in groups.items()]
    return out + [(f"{m} ({role})", [metrics]) for (m, role), metrics in frame_all.items()]


def print_shares(groups: dict[str, list[dict]], frame_all: dict, layer: str, level: float = 0.95) -> list[str]:
    """Print the table at ``layer``; the factors it found (none: nothing printed)."""
    rows = entries(groups, frame_all)
    factors = [f for f in ORDER if any(share_of(m, layer, f) is not None for _, ms in rows for m in ms)]
    if len(factors) <= 1:  # no recorded factors: the class alone is in the retrieval table already
        return []
    table = []
    for label, ms in rows:
        cells = {}
        for f in factors:
            vals = [v for v in (share_of(m, layer, f) for m in ms) if v is not None]
            if vals:
                cells[SHORT[f]] = interval(vals, level)
        table.append((label, cells))
    print(f"what the 8 nearest training images share with a test query at {layer} (x 100; 0 = no more than random "
          f"images, 100 = identical; class: precision@8, the share of the query's class; swing and limb: the pose)")
    print(layer_table(table, corner="", layers=[SHORT[f] for f in factors],
                      label_width=max(len(label) for label, _ in table) + 2, cell=lambda i: i.text()))
    return factors


def shares_figure(name: str, groups: dict[str, list[dict]], frame_all: dict, out: Path, level: float = 0.95):
    """``shares.png``: one panel per factor of :data:`PANELS` the runs recorded, its share against
    the layer for every configuration (mean, with the interval over seeds as a band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = entries(groups, frame_all)
    panels = [f for f in PANELS if any(share_of(m, layer, f) is not None for _, ms in rows for m in ms
                                       for layer in LAYERS)]
    if len(panels) <= 1:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), dpi=110, squeeze=False, sharey=False)
    for ax, f in zip(axes[0], panels):
        for label, ms in rows:
            layers = [layer for layer in LAYERS if any(share_of(m, layer, f) is not None for m in ms)]
            stats = [interval([v for v in (share_of(m, layer, f) for m in ms) if v is not None], level) for layer in layers]
            style = {"ls": "--", "color": "grey"} if "(floor)" in label else \
                    {"ls": ":", "color": "black"} if "(ceiling)" in label else {}
            line, = ax.plot(layers, [100 * s.mean for s in stats], marker="o", ms=3, label=label, **style)
            if stats and all(s.half is not None for s in stats):
                ax.fill_between(layers, [100 * s.lo for s in stats], [100 * s.hi for s in stats],
                                color=line.get_color(), alpha=0.12, lw=0)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_title(NAMES[f], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("shared with the query (x 100)", fontsize=8)
    axes[0][-1].legend(fontsize=6, loc="best")
    fig.suptitle(f"{name}: what the nearest neighbours share, by layer (mean, {round(100 * level)} % CI over seeds)",
                 fontsize=9)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "shares.png"
    fig.savefig(path)
    plt.close(fig)
    return path
