"""`ParityMetrics`: the parity and canary metrics, their names and labels, with exact samples."""

from __future__ import annotations

from decimal import Decimal

from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_pairs_gate_canary_and_evaluation_spend_are_exported_per_rule():
    metrics = Metrics()
    parity = Recorder(metrics).parity
    parity.paired("classify", "ft35", "tie")
    parity.paired("classify", "ft35", "tie")
    parity.paired("classify", "ft35", "loss")
    parity.gated("classify", "ft35", "undecided", 2 / 3, 0.25)
    parity.gated("classify", "ft35", "fail", 0.5, 0.2)
    parity.canary_share("classify", 0.25)
    parity.stepped("classify", "down")
    parity.evaluation_spent("classify", "reference", Decimal("0.0015"))
    parity.evaluation_spent("classify", "judge", Decimal("0.0005"))
    parity.evaluation_spent("classify", "judge", Decimal(0))
    pairs = {"rule": "classify", "candidate": "ft35"}
    assert sample(metrics, "turnout_parity_pairs_total", {**pairs, "outcome": "tie"}) == 2
    assert sample(metrics, "turnout_parity_pairs_total", {**pairs, "outcome": "loss"}) == 1
    assert sample(metrics, "turnout_parity_rate", pairs) == 0.5
    assert sample(metrics, "turnout_parity_lower_bound", pairs) == 0.2
    verdicts = {
        v: sample(metrics, "turnout_parity_verdict", {**pairs, "verdict": v}) for v in ("pass", "fail", "undecided")
    }
    assert verdicts == {"pass": 0, "fail": 1, "undecided": 0}
    assert sample(metrics, "turnout_canary_share", {"rule": "classify"}) == 0.25
    assert sample(metrics, "turnout_canary_step_changes_total", {"rule": "classify", "direction": "down"}) == 1
    assert sample(metrics, "turnout_evaluation_cost_usd_total", {"rule": "classify", "kind": "reference"}) == 0.0015
    assert sample(metrics, "turnout_evaluation_cost_usd_total", {"rule": "classify", "kind": "judge"}) == 0.0005
