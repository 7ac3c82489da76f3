"""The parity gate's statistics against known values, and the sequential test's error rates by simulation."""

from __future__ import annotations

import functools
import math
from statistics import NormalDist

import numpy as np
import pytest

from proxy.parity.gate import (
    GateVerdict,
    _log_beta_tail,
    fail_boundary,
    gate,
    log_evidence,
    pass_boundary,
    wilson_interval,
)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Statistics in Medicine 17,
# Table I, method 3 (the Wilson score interval without continuity correction), 95%.
NEWCOMBE = [
    ((81, 263), (0.2553, 0.3662)),
    ((15, 148), (0.0624, 0.1605)),
    ((0, 20), (0.0000, 0.1611)),
    ((1, 29), (0.0061, 0.1718)),
]


@pytest.mark.parametrize(("counts", "bounds"), NEWCOMBE)
def test_wilson_intervals_are_newcombe_s(counts: tuple[int, int], bounds: tuple[float, float]):
    successes, pairs = counts
    low, high = wilson_interval(successes, pairs, 0.95, two_sided=True)
    assert (round(low, 4), round(high, 4)) == bounds
    # Each bound of a two-sided 95% interval is a one-sided 97.5% bound.
    assert wilson_interval(successes, pairs, 0.975) == pytest.approx((low, high))


def test_wilson_edges():
    assert wilson_interval(0, 0, 0.95) == (0.0, 1.0)
    assert wilson_interval(10, 10, 0.95)[1] == 1.0
    z = NormalDist().inv_cdf(0.95)
    assert wilson_interval(52, 52, 0.95)[0] == pytest.approx(52 / (52 + z * z))  # all successes: n / (n + z^2)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(3, 2, 0.95)


@pytest.mark.parametrize(
    ("x", "a", "b", "expected"),
    [
        (0.3, 1, 5, 1 - 0.7**5),  # I_x(1, b) = 1 - (1 - x)^b
        (0.3, 4, 1, 0.3**4),  # I_x(a, 1) = x^a
        (0.5, 7.5, 7.5, 0.5),  # symmetric
        (0.9, 3, 2, 4 * 0.9**3 - 3 * 0.9**4),  # I_x(3, 2) = 4x^3 - 3x^4
        (0.01, 50, 2, 51 * 0.01**50 - 50 * 0.01**51),  # a far tail, still accurate: I_x(a, 2) = (a+1)x^a - a x^(a+1)
    ],
)
def test_the_incomplete_beta_function_against_closed_forms(x, a, b, expected):
    assert math.exp(_log_beta_tail(x, a, b, upper=False)) == pytest.approx(expected, rel=1e-9)
    assert math.exp(_log_beta_tail(1 - x, b, a, upper=True)) == pytest.approx(expected, rel=1e-9)


def test_the_mixture_ratio_against_its_closed_form():
    # All successes, uniform prior on (m, 1): (1 - m^(n+1)) / ((n + 1)(1 - m) m^n).
    for n, m in ((10, 0.9), (100, 0.95), (500, 0.99)):
        closed = (1 - m ** (n + 1)) / ((n + 1) * (1 - m) * m**n)
        assert math.exp(log_evidence(n, n, m, above=True)) == pytest.approx(closed, rel=1e-9)
    # No success, uniform prior on (0, m): (1 - (1 - m)^(n+1)) / ((n + 1) m (1 - m)^n).
    n, m = 3, 0.95
    closed = (1 - (1 - m) ** (n + 1)) / ((n + 1) * m * (1 - m) ** n)
    assert math.exp(log_evidence(0, n, m, above=False)) == pytest.approx(closed, rel=1e-9)


def test_pairs_needed_to_pass_with_no_loss():
    # Sequential: 88 successes in a row pass a 95% margin at 95%; the one-look Wilson bound needs 52.
    assert pass_boundary(87, 0.95, 0.95) is None
    assert pass_boundary(88, 0.95, 0.95) == 88
    assert gate(88, 88, margin=0.95).verdict is GateVerdict.PASS
    assert gate(87, 87, margin=0.95).verdict is GateVerdict.UNDECIDED
    assert gate(52, 52, margin=0.95, test="wilson").verdict is GateVerdict.PASS
    assert gate(51, 51, margin=0.95, test="wilson").verdict is GateVerdict.UNDECIDED
    assert pass_boundary(1000, 0.95, 0.95) == 969
    # at a 90% margin (the e2e canary's): 43 in a row
    assert pass_boundary(42, 0.9, 0.95) is None
    assert pass_boundary(43, 0.9, 0.95) == 43
    assert gate(43, 43, margin=0.9).lower == pytest.approx(43 / (43 + NormalDist().inv_cdf(0.95) ** 2))


def test_verdicts_and_the_figures_behind_them():
    result = gate(80, 100, margin=0.95)
    assert result.verdict is GateVerdict.FAIL
    assert (result.pairs, result.successes, result.rate) == (100, 80, 0.8)
    assert result.upper < 0.95 < result.evidence_fail
    assert gate(960, 1000, margin=0.95).verdict is GateVerdict.UNDECIDED
    assert gate(100, 100, margin=0.95, min_pairs=200).verdict is GateVerdict.UNDECIDED
    assert gate(0, 0, margin=0.95).verdict is GateVerdict.UNDECIDED
    assert gate(0, 0, margin=0.95).rate is None
    assert gate(80, 100, margin=0.95, test="wilson").verdict is GateVerdict.FAIL
    for bad in ({"margin": 1.0}, {"margin": 0.9, "confidence": 0.0}, {"margin": 0.9, "test": "bayes"}):
        with pytest.raises(ValueError, match=r"margin|test"):
            gate(1, 2, **bad)


PAIRS = 1000
RUNS = 2000


@functools.cache
def boundaries() -> tuple[np.ndarray, np.ndarray]:
    """For 1 to `PAIRS` pairs: the fewest successes that pass (n + 1: none), the most that fail (-1: none)."""
    n = range(1, PAIRS + 1)
    passing = [pass_boundary(i, 0.95, 0.95) or i + 1 for i in n]
    failing = [-1 if (found := fail_boundary(i, 0.95, 0.95)) is None else found for i in n]
    return np.array(passing), np.array(failing)


def monitored(rate: float, seed: int) -> dict[str, float]:
    """Share of `RUNS` runs of `PAIRS` pairs that ever pass, ever fail, and ever pass a one-look Wilson bound,
    checked after every pair (margin and confidence 0.95)."""
    n = np.arange(1, PAIRS + 1)
    passing, failing = boundaries()
    successes = np.cumsum(np.random.default_rng(seed).random((RUNS, PAIRS)) < rate, axis=1)
    z = NormalDist().inv_cdf(0.95)
    share = successes / n
    wilson = (share + z * z / (2 * n) - z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    return {
        "pass": float((successes >= passing).any(axis=1).mean()),
        "fail": float((successes <= failing).any(axis=1).mean()),
        "wilson pass": float((wilson >= 0.95).any(axis=1).mean()),
    }


def test_the_boundaries_agree_with_the_gate():
    for pairs in (100, 200, 1000):
        needed = pass_boundary(pairs, 0.95, 0.95)
        assert needed is not None
        assert gate(needed, pairs, margin=0.95).verdict is GateVerdict.PASS
        assert gate(needed - 1, pairs, margin=0.95).verdict is not GateVerdict.PASS
        most = fail_boundary(pairs, 0.95, 0.95)
        assert most is not None
        assert gate(most, pairs, margin=0.95).verdict is GateVerdict.FAIL
        assert gate(most + 1, pairs, margin=0.95).verdict is not GateVerdict.FAIL


def test_checked_after_every_pair_the_sequential_test_keeps_its_error_rate():
    at_margin = monitored(0.95, seed=1)  # the null's hardest case: p exactly at the margin
    assert at_margin["pass"] <= 0.05  # measured 0.029 (seed 1): Ville's bound holds under continuous looks
    assert at_margin["fail"] <= 0.05
    # The same looks at a one-look Wilson bound pass a candidate at the margin far more often than 5%
    # (measured 0.26): why the canary uses the sequential test.
    assert at_margin["wilson pass"] > 0.15
    below = monitored(0.94, seed=2)
    assert below["pass"] <= 0.05


def test_the_sequential_test_decides_clear_cases_within_its_pairs():
    assert monitored(0.99, seed=3)["pass"] >= 0.99
    assert monitored(0.97, seed=4)["pass"] >= 0.6  # measured 0.75: close to the margin takes longer
    clearly_worse = monitored(0.85, seed=5)
    assert clearly_worse["fail"] >= 0.99
    assert clearly_worse["pass"] == 0.0
