"""`ParityMetrics`: pairs, the parity gate and the canaries, per rule, and what evaluation costs apart from serving.

Labels are the policy's own names only: the rule, its candidate route, a pair's outcome (win, tie, loss,
undecided), a verdict (pass, fail, undecided), a step's direction (up, down, set) and the kind of evaluation
call (reference, candidate, judge). Evaluation calls are also priced as shadow copies are (on their route's
`turnout_cost_usd` and `turnout_overspend_usd`, with no baseline), so `savings - overspend = baseline - cost`
keeps holding; `turnout_evaluation_cost_usd_total` says how much of that cost was evaluation. Defined in the
registry of `proxy.accounting.metrics.Metrics`.
"""

from __future__ import annotations

from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["VERDICTS", "ParityMetrics"]

VERDICTS = ("pass", "fail", "undecided")


class ParityMetrics:
    """The parity and canary metrics; every value comes from `proxy.pairing` and `proxy.canaries`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        rule, candidate = "rule", "candidate"
        self.pairs = Counter(
            "turnout_parity_pairs",
            "Evaluated pairs of a candidate route's answer and the reference route's, by outcome for the candidate.",
            [rule, candidate, "outcome"],
            registry=registry,
        )
        self.rate = Gauge(
            "turnout_parity_rate",
            "The share of decided pairs where the candidate was at least as good as the reference.",
            [rule, candidate],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.lower_bound = Gauge(
            "turnout_parity_lower_bound",
            "The one-sided Wilson lower bound of that share, at the rule's confidence.",
            [rule, candidate],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.verdict = Gauge(
            "turnout_parity_verdict",
            "The parity gate's verdict: 1 on the verdict's label (pass, fail, undecided), 0 on the others.",
            [rule, candidate, "verdict"],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.share = Gauge(
            "turnout_canary_share",
            "The share of the rule's traffic the canary's candidate route answers (0 to 1, after the holdout).",
            [rule],
            registry=registry,
            multiprocess_mode="mostrecent",
        )
        self.step_changes = Counter(
            "turnout_canary_step_changes",
            "Changes of a canary's share: up (advance, resume), down (rollback) or set (pin, reset).",
            [rule, "direction"],
            registry=registry,
        )
        self.evaluation_cost = Counter(
            "turnout_evaluation_cost_usd",
            "What the background calls that make and judge pairs cost, in USD (part of turnout_cost_usd).",
            [rule, "kind"],
            registry=registry,
        )

    def paired(self, rule: str, candidate: str, outcome: str) -> None:
        """One pair evaluated."""
        self.pairs.labels(rule, candidate, outcome).inc()

    def gated(self, rule: str, candidate: str, verdict: str, rate: float | None, lower: float) -> None:
        """The gate's latest result for a rule and its candidate."""
        if rate is not None:
            self.rate.labels(rule, candidate).set(rate)
        self.lower_bound.labels(rule, candidate).set(lower)
        for name in VERDICTS:
            self.verdict.labels(rule, candidate, name).set(1 if name == verdict else 0)

    def canary_share(self, rule: str, share: float) -> None:
        """A canary's share as last read."""
        self.share.labels(rule).set(share)

    def stepped(self, rule: str, direction: str) -> None:
        """A canary's share changed."""
        self.step_changes.labels(rule, direction).inc()

    def evaluation_spent(self, rule: str, kind: str, cost: Decimal) -> None:
        """A background evaluation call's cost."""
        if cost > 0:
            self.evaluation_cost.labels(rule, kind).inc(float(cost))
