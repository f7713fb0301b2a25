"""``health.png`` of a study's report: the representation-health measures logged every epoch
(``health/std``, ``health/rank``, ``health/alignment``, ``health/uniformity``; :mod:`sslray.eval.health`)
against pretraining epochs, one line per configuration (its method and swept values, mean over its
seeds), a cross where a run was flagged collapsed. What shows whether, and when, an ablation
collapses: the question of the negative-free methods (issue 27)."""

from __future__ import annotations

from pathlib import Path

from ..tracking.tags import COLLAPSED_TAG, collapse_of
from .figures import variant_styles

MEASURES = (("health/std", "embedding std (1 = spread, 0 = collapsed)"),
            ("health/rank", "effective rank (RankMe)"),
            ("health/alignment", "alignment (lower: views agree)"),
            ("health/uniformity", "uniformity (lower: spread on the sphere)"))


def health_curves(rows: list[dict], store, label) -> tuple[dict, dict]:
    """``({configuration: {measure: {epoch: [values over seeds]}}}, {configuration: [collapse epochs]})``
    from the runs of ``rows`` (``row["run"]``: an MLflow run id); ``label(row)`` names a configuration."""
    curves: dict = {}
    collapsed: dict = {}
    for r in rows:
        name = label(r)
        for key, _ in MEASURES:
            for m in store.history(r["run"], key):
                curves.setdefault(name, {}).setdefault(key, {}).setdefault(m.step + 1, []).append(m.value)
        hit = collapse_of(r.get("tags", {}).get(COLLAPSED_TAG, ""))
        if hit:
            collapsed.setdefault(name, []).append(hit[0])
    return curves, collapsed


def collapse_lines(rows: list[dict], label) -> list[str]:
    """One report line per configuration with a run flagged collapsed: how many of its seeds, at which
    epochs, on which rule (``collapsed: byol ema=0 predictor=False: 3 of 3 seeds, epoch 1 (embedding
    std)``). What the figure's crosses show, in words."""
    seeds: dict[str, int] = {}
    flagged: dict[str, list[tuple[int, str]]] = {}
    for r in rows:
        name = label(r)
        seeds[name] = seeds.get(name, 0) + 1
        hit = collapse_of(r.get("tags", {}).get(COLLAPSED_TAG, ""))
        if hit:
            flagged.setdefault(name, []).append(hit)
    out = []
    for name, hits in flagged.items():
        epochs = ", ".join(str(e) for e in sorted({e for e, _ in hits}))
        rules = " and ".join(sorted({r for _, r in hits}))
        out.append(f"collapsed: {name}: {len(hits)} of {seeds[name]} seeds, epoch {epochs} ({rules})")
    return out


def health_figure(name: str, rows: list[dict], store, out: Path, label) -> Path | None:
    """Draw ``out/health.png`` (None when no run logged a health measure)."""
    curves, collapsed = health_curves(rows, store, label)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    look = {c: {**v, "ms": 3.5} for c, v in variant_styles(sorted(curves)).items()}
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4.2 * len(MEASURES) + 3.2, 3.8), dpi=110)
    for ax, (key, title) in zip(axes, MEASURES):
        for config in sorted(curves):
            by_epoch = curves[config].get(key, {})
            xs = sorted(by_epoch)
            if not xs:
                continue
            ys = [sum(by_epoch[e]) / len(by_epoch[e]) for e in xs]
            ax.plot(xs, ys, label=config, **look[config])
            for e in collapsed.get(config, []):
                if e in by_epoch:
                    ax.plot([e], [sum(by_epoch[e]) / len(by_epoch[e])], marker="x", ms=9, mew=2,
                            color=look[config]["color"], linestyle="none")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("pretraining epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right", frameon=False)
    fig.suptitle(f"{name}: representation health per epoch (mean over seeds; x: flagged collapsed)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 3.0 / (4.2 * len(MEASURES) + 3.2), 1))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "health.png"
    fig.savefig(path)
    plt.close(fig)
    return path
