"""A number's uncertainty: the mean over seeds with its Student-t confidence interval, and whether
two settings are separable at this budget.

With few seeds (2-10) the t interval is the honest choice: ``mean ± t(level, n-1) · s / √n``, with
``s`` the sample standard deviation. A bootstrap on three values would only resample them. Two
settings are called *separable* when their intervals do not overlap; that is conservative (for
equal spreads, two 95 % intervals that just touch mean a difference at p < 0.01), so "not
separable" means "this budget cannot tell them apart", not "they are equal".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import UserError

LEVEL = 0.95
METHOD = "Student-t interval over seeds"


def check_level(level: float) -> float:
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise UserError(f"confidence level must lie strictly between 0 and 1 (got {level!r})")
    return float(level)


def t_quantile(p: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(p, df))


@dataclass(frozen=True)
class Interval:
    """``mean`` over ``n`` values with its ``level`` confidence interval [``lo``, ``hi``]; one
    value has no interval (``lo = hi = mean``, ``half = None``)."""

    mean: float
    n: int
    sd: float | None
    half: float | None
    level: float = LEVEL

    @property
    def lo(self) -> float:
        return self.mean - (self.half or 0.0)

    @property
    def hi(self) -> float:
        return self.mean + (self.half or 0.0)

    def overlaps(self, other: Interval) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``45.1 ± 1.2`` (a fraction shown as a percentage by default); one value: ``45.1``."""
        m = f"{scale * self.mean:.{digits}f}"
        return m if self.half is None else f"{m} ± {scale * self.half:.{digits}f}"


def interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of ``values`` with its Student-t interval at ``level``."""
    level = check_level(level)
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        raise ValueError("interval of no values")
    n = len(vals)
    mean = sum(vals) / n
    if n == 1:
        return Interval(mean, 1, None, None, level)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return Interval(mean, n, sd, t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n), level)


def separability(best: tuple[str, Interval], runner_up: tuple[str, Interval], mode: str = "max") -> str:
    """One plain sentence: is the best setting (by its mean) separable from the runner-up?"""
    (a, ia), (b, ib) = best, runner_up
    if ia.half is None or ib.half is None:
        single = [name for name, i in ((a, ia), (b, ib)) if i.half is None]
        who = "both have" if len(single) == 2 else f"{single[0]} has"
        return (f"{a} ({ia.text()}) leads {b} ({ib.text()}), but {who} one seed: no interval, "
                "not separable at this budget")
    if ia.overlaps(ib):
        return (f"{a} ({ia.text()}) and {b} ({ib.text()}): intervals overlap, not separable at this budget "
                f"({round(100 * ia.level)} % {METHOD.replace('interval', 'intervals')})")
    word = "above" if mode == "max" else "below"
    return f"{a} ({ia.text()}) is separable {word} {b} ({ib.text()}) ({round(100 * ia.level)} % {METHOD.replace('interval', 'intervals')})"


def layer_intervals(rows, value, level: float = LEVEL) -> dict[str, Interval]:
    """``{layer: Interval}`` over ``rows`` (seeds) of ``value(row, layer)``, for every layer with a value."""
    from . import LAYERS

    out = {}
    for layer in LAYERS:
        vals = [v for v in (value(r, layer) for r in rows) if v is not None]
        if vals:
            out[layer] = interval(vals, level)
    return out
