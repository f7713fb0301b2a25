"""The one formatter of per-layer tables: rows of ``{layer: value}``, as fixed-width text (the
console) or Markdown (paste-ready), used by ``sslray train``/``eval``, ``compare`` and ``report``."""

from __future__ import annotations

from collections.abc import Sequence

from . import LAYERS


def pct(v: float | None, missing: str = "-") -> str:
    return missing if v is None else f"{100 * v:.1f}"


def layer_table(rows: Sequence[tuple[str, dict[str, float | None]]], style: str = "text", corner: str = "top-1 %",
                layers: Sequence[str] | None = None, cell=pct, label_width: int | None = None) -> str:
    """``rows = [(label, {layer: value})]`` -> a table with one column per layer that any row has.

    ``cell(value)`` formats a value (default: a fraction as a percentage); a missing value prints
    as ``-`` (text) or ``–`` (Markdown)."""
    layers = list(layers or [layer for layer in LAYERS if any(r.get(layer) is not None for _, r in rows)])
    if style == "markdown":
        lines = [f"| {corner} | " + " | ".join(layers) + " |", "|---|" + "---|" * len(layers)]
        for label, r in rows:
            lines.append(f"| {label} | " + " | ".join(cell(r[layer]) if r.get(layer) is not None else "–"
                                                      for layer in layers) + " |")
        return "\n".join(lines)
    width = label_width or max([len(corner), *(len(label) for label, _ in rows)]) + 2
    cells = [[cell(r[layer]) if r.get(layer) is not None else "-" for layer in layers] for _, r in rows]
    w = max([8, *(len(c) + 2 for row in cells for c in row), *(len(layer) + 2 for layer in layers)])  # "45.1 ± 12.4"
    head = f"{corner:<{width}}" + "".join(f"{layer:>{w}}" for layer in layers)
    body = [f"{label[: width - 1]:<{width}}" + "".join(f"{c:>{w}}" for c in row) for (label, _), row in zip(rows, cells)]
    return "\n".join([head, *body])
