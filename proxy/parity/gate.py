"""The parity gate: is the candidate route at least as good as the reference in a `margin` share of pairs?

Each evaluated pair is a success when the candidate won or tied. With p the share of successes in the rule's
traffic, the gate tests non-inferiority, H0: p < margin against H1: p >= margin, at `confidence`:

- `wilson`: the Wilson score interval (Wilson 1927; Newcombe 1998, "Two-sided confidence intervals for the
  single proportion", method 3) for a fixed number of pairs. One-sided at `confidence`: pass when the lower
  bound reaches the margin, fail when the upper bound is under it. Valid when looked at once; looked at after
  every pair its error rate grows (`tests/unit/test_parity_gate.py` measures by how much).
- `sequential` (the default, since the canary looks after every pair): two one-sided mixture likelihood ratios
  (Robbins 1970, "Statistical methods related to the law of the iterated logarithm"; the beta-binomial mixture
  of Howard, Ramdas, McAuliffe and Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Ann. Statist. 49(2)). To pass: the binomial likelihood under a Beta(a, b) prior on p,
  truncated to (margin, 1), over the likelihood at p = margin. For any p0 <= margin this is a nonnegative
  supermartingale with mean at most 1, so by Ville's inequality it ever reaches 1 / (1 - confidence) with
  probability at most 1 - confidence, however often it is checked and whenever one stops. To fail: the
  same with the prior truncated to (0, margin), against every p0 >= margin. The integrals are regularised
  incomplete beta functions (`_log_beta_tail`), computed by Lentz's continued fraction.

A gate with fewer than `min_pairs` pairs is undecided whatever the statistics say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from statistics import NormalDist

__all__ = [
    "GateResult",
    "GateVerdict",
    "fail_boundary",
    "gate",
    "log_evidence",
    "pass_boundary",
    "wilson_interval",
]


class GateVerdict(StrEnum):
    """What the gate says of a candidate route."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    UNDECIDED = "undecided"


def wilson_interval(successes: int, pairs: int, confidence: float, *, two_sided: bool = False) -> tuple[float, float]:
    """The Wilson score interval for `successes` of `pairs`; (0, 1) without pairs.

    Each bound is one-sided at `confidence`, or, `two_sided`, both together are at `confidence`.
    """
    if not 0 <= successes <= pairs:
        raise ValueError(f"{successes} successes of {pairs} pairs")
    if pairs == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf((1 + confidence) / 2 if two_sided else confidence)
    rate, z2 = successes / pairs, z * z
    centre = rate + z2 / (2 * pairs)
    spread = z * math.sqrt(rate * (1 - rate) / pairs + z2 / (4 * pairs * pairs))
    scale = 1 + z2 / pairs
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def _beta_fraction(x: float, a: float, b: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes §6.4)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1) < 1e-15:
            return result
    raise ArithmeticError(f"the incomplete beta fraction did not converge for x={x}, a={a}, b={b}")


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_beta_tail(x: float, a: float, b: float, *, upper: bool) -> float:
    """The log of I_x(a, b) (the Beta(a, b) mass under x), or of 1 - I_x(a, b) with `upper`, accurate in both tails."""
    if upper:
        return _log_beta_tail(1 - x, b, a, upper=False)
    if x <= 0:
        return -math.inf
    if x >= 1:
        return 0.0
    front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1) / (a + b + 2):
        return front + math.log(_beta_fraction(x, a, b)) - math.log(a)
    other = math.exp(b * math.log1p(-x) + a * math.log(x) - _log_beta(b, a)) * _beta_fraction(1 - x, b, a) / b
    return math.log1p(-min(other, 1.0)) if other < 1 else -math.inf


def log_evidence(
    successes: int, pairs: int, margin: float, *, above: bool, prior: tuple[float, float] = (1, 1)
) -> float:
    """The log of the mixture likelihood ratio against p = margin.

    The Beta `prior` is truncated above the margin (`above`: evidence that p >= margin) or below it (evidence
    that p < margin).
    """
    a, b = prior
    failures = pairs - successes
    tail_after = _log_beta_tail(margin, a + successes, b + failures, upper=above)
    tail_before = _log_beta_tail(margin, a, b, upper=above)
    mixture = _log_beta(a + successes, b + failures) + tail_after - _log_beta(a, b) - tail_before
    at_margin = successes * math.log(margin) + failures * math.log1p(-margin)
    return mixture - at_margin


def pass_boundary(pairs: int, margin: float, confidence: float, *, prior: tuple[float, float] = (1, 1)) -> int | None:
    """The fewest successes of `pairs` with which the sequential test passes (None: not even all of them)."""
    threshold = -math.log1p(-confidence)
    if log_evidence(pairs, pairs, margin, above=True, prior=prior) < threshold:
        return None
    low, high = 0, pairs  # the evidence grows with the successes: bisect for the first that is enough
    while low < high:
        middle = (low + high) // 2
        if log_evidence(middle, pairs, margin, above=True, prior=prior) >= threshold:
            high = middle
        else:
            low = middle + 1
    return low


def fail_boundary(pairs: int, margin: float, confidence: float, *, prior: tuple[float, float] = (1, 1)) -> int | None:
    """The most successes of `pairs` with which the sequential test fails (None: not even with none)."""
    threshold = -math.log1p(-confidence)
    if log_evidence(0, pairs, margin, above=False, prior=prior) < threshold:
        return None
    low, high = 0, pairs  # the evidence shrinks with the successes: bisect for the last that is enough
    while low < high:
        middle = (low + high + 1) // 2
        if log_evidence(middle, pairs, margin, above=False, prior=prior) >= threshold:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(frozen=True, slots=True)
class GateResult:
    """The gate's verdict for one rule and candidate, and the figures behind it."""

    verdict: GateVerdict
    pairs: int
    successes: int
    margin: float
    confidence: float
    test: str
    lower: float
    """The one-sided Wilson lower bound at `confidence`."""
    upper: float
    """The one-sided Wilson upper bound at `confidence`."""
    evidence_pass: float
    """The sequential test's likelihood ratio for p >= margin (it passes at 1 / (1 - confidence))."""
    evidence_fail: float
    """The sequential test's likelihood ratio for p < margin (it fails at 1 / (1 - confidence))."""

    @property
    def rate(self) -> float | None:
        """The share of pairs where the candidate was at least as good (None: no pair)."""
        return self.successes / self.pairs if self.pairs else None


def gate(
    successes: int,
    pairs: int,
    *,
    margin: float,
    confidence: float = 0.95,
    test: str = "sequential",
    min_pairs: int = 0,
    prior: tuple[float, float] = (1, 1),
) -> GateResult:
    """The non-inferiority verdict on `successes` of `pairs`, by `test` (`sequential` or `wilson`)."""
    if not 0 < margin < 1 or not 0 < confidence < 1:
        raise ValueError(f"margin {margin} and confidence {confidence} must be between 0 and 1")
    if test not in ("sequential", "wilson"):
        raise ValueError(f"unknown test {test!r}: sequential or wilson")
    lower, upper = wilson_interval(successes, pairs, confidence)
    for_pass = log_evidence(successes, pairs, margin, above=True, prior=prior)
    for_fail = log_evidence(successes, pairs, margin, above=False, prior=prior)
    verdict = GateVerdict.UNDECIDED
    if pairs >= max(min_pairs, 1):
        threshold = -math.log1p(-confidence)
        if test == "wilson":
            verdict = GateVerdict.PASS if lower >= margin else GateVerdict.FAIL if upper < margin else verdict
        elif for_pass >= threshold:
            verdict = GateVerdict.PASS
        elif for_fail >= threshold:
            verdict = GateVerdict.FAIL
    return GateResult(
        verdict=verdict,
        pairs=pairs,
        successes=successes,
        margin=margin,
        confidence=confidence,
        test=test,
        lower=lower,
        upper=upper,
        evidence_pass=math.exp(min(for_pass, 700.0)),
        evidence_fail=math.exp(min(for_fail, 700.0)),
    )
