"""`proxy.access`: reading the presented key, throttling an address's failures, and the errors limits give."""

from __future__ import annotations

from decimal import Decimal

import pytest

from proxy.access import _refusal_error
from proxy.auth.attempts import FailedAttempts, presented_key
from proxy.auth.limits import Limits, Refused, Scope
from proxy.wire.errors import QuotaExceededError, RateLimitError, TokenRateLimitError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"authorization", b"Bearer tk-abc")], b"tk-abc"),
        ([(b"authorization", b"bearer  tk-abc ")], b"tk-abc"),
        ([(b"api-key", b"tk-azure")], b"tk-azure"),
        ([(b"api-key", b"tk-azure"), (b"authorization", b"Bearer tk-first")], b"tk-first"),
        ([(b"authorization", b"Basic dXNlcjpwdw==")], b""),
        ([], b""),
    ],
)
def test_thepresented_key(headers: list[tuple[bytes, bytes]], key: bytes) -> None:
    assert presented_key(headers) == key


def test_an_address_is_throttled_after_its_failures_for_the_rest_of_the_minute() -> None:
    now = [100.0]
    attempts = FailedAttempts(3, clock=lambda: now[0])
    for _ in range(3):
        assert attempts.blocked("10.0.0.1") is None
        attempts.failed("10.0.0.1")
    assert attempts.blocked("10.0.0.1") == pytest.approx(60.0)
    assert attempts.blocked("10.0.0.2") is None  # another address is not
    now[0] += 59.5
    assert attempts.blocked("10.0.0.1") == pytest.approx(0.5)
    now[0] += 1
    assert attempts.blocked("10.0.0.1") is None


def test_refusals_are_openai_errors() -> None:
    key = Scope(kind="key", name="ci", limits=Limits(rpm=5, tpm=100, budget_usd=Decimal(3), period="day"))
    rpm = _refusal_error(Refused("rpm", key, 12.4))
    assert type(rpm) is RateLimitError
    assert rpm.status == 429
    assert rpm.headers["retry-after"] == "12"
    assert "key 'ci'" in rpm.message
    assert "Limit 5" in rpm.message
    tpm = _refusal_error(Refused("tpm", key, 0.2))
    assert type(tpm) is TokenRateLimitError
    assert tpm.headers["retry-after"] == "1"
    assert "Limit 100" in tpm.message
    budget = _refusal_error(Refused("budget", key, 3600))
    assert isinstance(budget, QuotaExceededError)
    assert budget.instance_code == "insufficient_quota"
    assert budget.headers["x-should-retry"] == "false"
    assert "day" in budget.message
    down = _refusal_error(Refused("unavailable"))
    assert down.status == 503
    assert down.instance_code == "limits_unavailable"


def test_metric_labels_are_the_first_keys_seen_then_other() -> None:
    from proxy.accounting.callers import CallerMetrics
    from proxy.accounting.metrics import Metrics
    from proxy.accounting.tally import Tally

    metrics = Metrics()
    callers = CallerMetrics(metrics.registry, metrics.batch, top=2)
    for name in ("a", "b", "c", "d", "a"):
        callers.record(Tally(caller=name, team="t", keyed=True, status=200))
    callers.record(Tally(caller="header-says", status=200))  # keys off: never a label
    text = metrics.exposition().decode()
    assert 'turnout_key_requests_total{key="a",status_class="2xx",team="t"} 2.0' in text
    assert 'turnout_key_requests_total{key="b",status_class="2xx",team="t"} 1.0' in text
    assert 'turnout_key_requests_total{key="other",status_class="2xx",team="t"} 2.0' in text
    assert "header-says" not in text
