"""``sslray.stats``: the Student-t interval every answer rests on, against hand-worked t values
(df 1 and 2 have closed forms), the level's bounds, overlap at the boundary and the verdict's words."""

from __future__ import annotations

import math

import pytest

from sslray.errors import UserError
from sslray.stats import Interval, check_level, interval, separability

# t quantiles by hand: df 1 is the Cauchy, t = tan(pi (p - 1/2)); df 2: t = (2p - 1) / sqrt(2 p (1 - p))
T_975_DF1 = math.tan(math.pi * 0.475)  # 12.7062...
T_975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # 4.3027...
T_95_DF1 = math.tan(math.pi * 0.45)  # 6.3138..., the 90 % interval's


def test_hand_worked_t_values_are_the_textbook_ones():
    assert T_975_DF1 == pytest.approx(12.706, abs=1e-3) and T_975_DF2 == pytest.approx(4.303, abs=1e-3)
    assert T_95_DF1 == pytest.approx(6.314, abs=1e-3)


def test_one_value_has_no_interval():
    i = interval([0.42])
    assert (i.mean, i.n, i.sd, i.half, i.level) == (0.42, 1, None, None, 0.95)
    assert i.lo == i.hi == 0.42 and i.text() == "42.0"


def test_two_values_give_the_t_interval_with_one_degree_of_freedom():
    i = interval([0.4, 0.6])
    # mean 0.5; s = sqrt((0.1^2 + 0.1^2) / 1) = 0.1 sqrt(2); half = t * s / sqrt(2) = 0.1 t
    assert i.n == 2 and i.mean == pytest.approx(0.5, abs=1e-15)
    assert i.sd == pytest.approx(0.1 * math.sqrt(2), rel=1e-12)
    assert i.half == pytest.approx(0.1 * T_975_DF1, rel=1e-9)
    assert i.lo == pytest.approx(0.5 - 1.27062047, rel=1e-8) and i.hi == pytest.approx(0.5 + 1.27062047, rel=1e-8)
    assert i.text() == "50.0 ± 127.1" and i.text(scale=1, digits=3) == "0.500 ± 1.271"
    # at 90 %: t(0.95, 1)
    assert interval([0.4, 0.6], level=0.9).half == pytest.approx(0.1 * T_95_DF1, rel=1e-9)


def test_three_values_use_two_degrees_of_freedom_and_skip_missing_ones():
    i = interval([0.1, None, 0.2, float("nan"), 0.3])
    # mean 0.2; s = sqrt((0.01 + 0 + 0.01) / 2) = 0.1; half = t(0.975, 2) * 0.1 / sqrt(3)
    assert i.n == 3 and i.mean == pytest.approx(0.2) and i.sd == pytest.approx(0.1, rel=1e-12)
    assert i.half == pytest.approx(T_975_DF2 * 0.1 / math.sqrt(3), rel=1e-9)
    with pytest.raises(ValueError, match="no values"):
        interval([None, float("nan")])


@pytest.mark.parametrize("level", [0, 1, -0.5, 1.5, 95, True, "0.95", None, float("nan")])
def test_a_level_outside_zero_to_one_is_refused(level):
    with pytest.raises(UserError, match="strictly between 0 and 1"):
        check_level(level)
    with pytest.raises(UserError):
        interval([0.1, 0.2], level=level)


@pytest.mark.parametrize("level", [1e-9, 0.5, 0.95, 1 - 1e-9])
def test_a_level_inside_is_kept(level):
    assert check_level(level) == level


def _iv(mean, half):
    return Interval(mean, 2, 0.1, half)


def test_intervals_that_touch_overlap_and_a_hair_apart_do_not():
    # exact binary fractions: [0, 0.5] and [0.5, 1] share the point 0.5
    a, touching, apart = _iv(0.25, 0.25), _iv(0.75, 0.25), _iv(0.75, 0.2490234375)
    assert a.hi == 0.5 == touching.lo and apart.lo == 0.5009765625
    assert a.overlaps(touching) and touching.overlaps(a)
    assert not a.overlaps(apart) and not apart.overlaps(a)
    assert a.overlaps(a)


def test_the_verdicts_word_for_word():
    worst, best = ("rotation lr=0.05", _iv(0.25, 0.25)), ("rotation lr=0.2", _iv(0.75, 0.2490234375))
    assert separability(best, worst) == ("rotation lr=0.2 (75.0 ± 24.9) is separable above rotation lr=0.05 "
                                         "(25.0 ± 25.0) (95 % Student-t intervals over seeds)")
    # mode: min (a loss, an error): the best is the lowest, separable *below* the runner-up
    assert separability(worst, best, mode="min") == ("rotation lr=0.05 (25.0 ± 25.0) is separable below "
                                                     "rotation lr=0.2 (75.0 ± 24.9) (95 % Student-t intervals "
                                                     "over seeds)")
    touching = ("rotation lr=0.2", _iv(0.75, 0.25))
    assert separability(touching, worst) == ("rotation lr=0.2 (75.0 ± 25.0) and rotation lr=0.05 (25.0 ± 25.0): "
                                             "intervals overlap, not separable at this budget "
                                             "(95 % Student-t intervals over seeds)")
    one = ("jigsaw", Interval(0.9, 1, None, None))
    assert separability(one, worst) == ("jigsaw (90.0) leads rotation lr=0.05 (25.0 ± 25.0), but jigsaw has one "
                                        "seed: no interval, not separable at this budget")
    assert "but both have one seed" in separability(one, ("rotation", Interval(0.1, 1, None, None)))
    at90 = ("a", Interval(0.9, 2, 0.01, 0.01, 0.9)), ("b", Interval(0.1, 2, 0.01, 0.01, 0.9))
    assert separability(*at90).endswith("(90 % Student-t intervals over seeds)")
