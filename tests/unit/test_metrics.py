"""`proxy.accounting.metrics.Metrics`: what one request records, and the label vocabulary."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.cost import PriceTable
from proxy.accounting.metrics import Metrics
from proxy.accounting.tally import Tally
from proxy.wire.errors import UpstreamError, UpstreamTimeoutError, upstream_status_error
from proxy.wire.schemas import Usage

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
PRICES = PriceTable(baseline_model="gpt-4", known_models=[FT, "gpt-4"])
USAGE = Usage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500)


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


def finished(route: str = "support-ft", *, stream: bool = False, status: int = 200, **fields: object) -> Tally:
    tally = Tally(request_id="req-1", started=100.0, routed=True, endpoint="chat", stream=stream, status=status)
    tally.decided(route, "default")
    tally.upstream_seconds, tally.answered_at, tally.ended_at = 0.4, 100.45, 100.5
    tally.first_byte_at = 100.2 if stream else None
    for name, item in fields.items():
        setattr(tally, name, item)
    return tally


def test_a_request_is_counted_timed_and_priced():
    metrics = Metrics()
    tally = finished()
    tally.charge_for(PRICES, FT, USAGE)
    metrics.record(tally)
    route = {"route": "support-ft"}
    assert (
        value(
            metrics,
            "turnout_requests_total",
            rule="default",
            model=FT,
            status_class="2xx",
            cache="bypass",
            endpoint="chat",
            **route,
        )
        == 1
    )
    assert value(
        metrics, "turnout_request_duration_seconds_sum", cache="bypass", endpoint="chat", **route
    ) == pytest.approx(0.5)
    assert value(metrics, "turnout_upstream_duration_seconds_sum", **route) == pytest.approx(0.4)
    assert value(metrics, "turnout_overhead_seconds_sum", **route) == pytest.approx(0.1)
    assert value(metrics, "turnout_overhead_seconds_bucket", le="0.25", **route) == 1
    assert value(metrics, "turnout_overhead_seconds_bucket", le="0.05", **route) == 0
    assert value(metrics, "turnout_tokens_total", model=FT, kind="prompt", **route) == 1000
    assert value(metrics, "turnout_tokens_total", model=FT, kind="completion", **route) == 500
    assert value(metrics, "turnout_cost_usd_total", model=FT, **route) == pytest.approx(0.02)  # 12 + 8 mUSD
    assert value(metrics, "turnout_baseline_cost_usd_total", model=FT, **route) == pytest.approx(0.06)
    assert value(metrics, "turnout_savings_usd_total", model=FT, **route) == pytest.approx(0.04)
    assert value(metrics, "turnout_time_to_first_token_seconds_count", cache="bypass", **route) is None


def test_a_stream_s_upstream_time_runs_to_its_end_and_its_first_token_is_timed():
    metrics = Metrics()
    metrics.record(finished(stream=True))
    route = {"route": "support-ft"}
    assert value(metrics, "turnout_time_to_first_token_seconds_sum", cache="bypass", **route) == pytest.approx(0.2)
    assert value(metrics, "turnout_upstream_duration_seconds_sum", **route) == pytest.approx(0.45)
    assert value(metrics, "turnout_overhead_seconds_sum", **route) == pytest.approx(0.05)


def test_a_cache_hit_through_the_tally_api_counts_its_lookup_and_saves_its_whole_baseline():
    metrics = Metrics()
    hit = finished(cache="hit", upstream_seconds=0.0, answered_at=None)
    hit.charge_for(PRICES, FT, USAGE, cached=True)
    metrics.record(hit)
    metrics.record(finished(cache="miss"))
    route = {"route": "support-ft"}
    assert value(metrics, "turnout_cache_lookups_total", result="hit", **route) == 1
    assert value(metrics, "turnout_cache_lookups_total", result="miss", **route) == 1
    assert value(metrics, "turnout_cache_lookups_total", result="bypass", **route) is None
    assert value(metrics, "turnout_cost_usd_total", model=FT, **route) == 0
    assert value(metrics, "turnout_savings_usd_total", model=FT, **route) == pytest.approx(0.06)
    assert value(metrics, "turnout_upstream_duration_seconds_count", **route) == 1  # the miss only
    assert value(metrics, "turnout_overhead_seconds_count", **route) == 2


def test_a_dearer_route_than_the_baseline_overspends_instead():
    metrics = Metrics()
    tally = finished(route="big")
    tally.charge_for(PRICES, "gpt-4-32k", USAGE)
    metrics.record(tally)
    assert value(metrics, "turnout_overspend_usd_total", route="big", model="gpt-4-32k") == pytest.approx(0.06)
    assert value(metrics, "turnout_savings_usd_total", route="big", model="gpt-4-32k") is None


def test_fallbacks_retries_errors_embeddings_and_circuits():
    metrics = Metrics()
    tally = finished(route="gpt4", fallback_from=("support-ft",))
    tally.failed_attempt("support-ft", upstream_status_error(500, b""), retried=True)
    tally.failed_attempt("support-ft", UpstreamTimeoutError("slow"), retried=False)
    tally.upstream_error("gpt4", "midstream")
    tally.embedded(PRICES, "text-embedding-3-small", 1000)
    tally.circuits = [("support-ft", "open"), ("gpt4", "closed")]
    metrics.record(tally)
    assert value(metrics, "turnout_fallbacks_total", route="support-ft") == 1
    assert value(metrics, "turnout_retries_total", route="support-ft") == 1
    assert value(metrics, "turnout_upstream_errors_total", route="support-ft", kind="server_error") == 1
    assert value(metrics, "turnout_upstream_errors_total", route="support-ft", kind="timeout") == 1
    assert value(metrics, "turnout_upstream_errors_total", route="gpt4", kind="midstream") == 1
    assert value(metrics, "turnout_embedding_tokens_total", model="text-embedding-3-small") == 1000
    assert value(metrics, "turnout_embedding_cost_usd_total", model="text-embedding-3-small") == pytest.approx(2e-5)
    assert value(metrics, "turnout_circuit_state", route="support-ft") == 2
    assert value(metrics, "turnout_circuit_state", route="gpt4") == 0


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (upstream_status_error(429, b""), "rate_limit"),
        (upstream_status_error(401, b""), "auth"),
        (upstream_status_error(404, b""), "not_found"),
        (upstream_status_error(400, b""), "rejected"),
        (upstream_status_error(503, b""), "server_error"),
        (UpstreamError("refused"), "connection"),
    ],
)
def test_upstream_error_kinds_are_a_fixed_vocabulary(error, kind):
    metrics = Metrics()
    tally = finished()
    tally.failed_attempt("support-ft", error, retried=False)
    metrics.record(tally)
    assert value(metrics, "turnout_upstream_errors_total", route="support-ft", kind=kind) == 1


def test_no_caller_model_or_key_a_client_chose_becomes_a_label():
    metrics = Metrics()
    tally = finished(caller="team-with-a-very-unique-name", request_id="sk-secret-request-id-123456")
    tally.charge_for(PRICES, "some-model-a-client-made-up", USAGE)
    metrics.record(tally)
    text = metrics.exposition().decode()
    assert "team-with" not in text
    assert "sk-secret" not in text
    assert "made-up" not in text
    assert value(metrics, "turnout_tokens_total", route="support-ft", model="other", kind="prompt") == 1000


def test_a_request_without_a_decision_is_labelled_none_and_a_gone_client_4xx():
    metrics = Metrics()
    tally = Tally(routed=True, status=499, started=1.0)
    tally.ended_at = 1.001
    metrics.record(tally)
    labels = {"route": "none", "rule": "none", "model": "none", "status_class": "4xx", "cache": "bypass"}
    assert value(metrics, "turnout_requests_total", **labels, endpoint="none") == 1


def test_a_passed_through_request_is_counted_and_timed_by_its_api_family():
    metrics = Metrics()
    tally = Tally(endpoint="files", route="passthrough", status=404, started=1.0)
    tally.upstream_seconds, tally.ended_at = 0.25, 1.5
    metrics.record(tally)
    common = {"route": "passthrough", "cache": "bypass", "endpoint": "files"}
    assert value(metrics, "turnout_requests_total", rule="none", model="none", status_class="4xx", **common) == 1
    assert value(metrics, "turnout_request_duration_seconds_sum", **common) == pytest.approx(0.5)
    assert value(metrics, "turnout_upstream_duration_seconds_sum", route="passthrough") == pytest.approx(0.25)
    assert value(metrics, "turnout_tokens_total", route="passthrough", model="none", kind="prompt") is None


def test_reloads_in_flight_and_build_info():
    metrics = Metrics()
    metrics.reloaded(ok=True)
    metrics.reloaded(ok=False)
    metrics.reloaded(ok=True)
    metrics.in_flight.inc()
    assert value(metrics, "turnout_policy_reloads_total", result="success") == 2
    assert value(metrics, "turnout_policy_reloads_total", result="failure") == 1
    assert value(metrics, "turnout_requests_in_flight") == 1
    assert [labels for name, labels in samples(metrics) if name == "turnout_build_info"]


def test_no_created_series_and_the_rest_of_the_process_keeps_its_own():
    metrics = Metrics()
    metrics.record(finished())
    metrics.reloaded(ok=True)
    assert "_created" not in metrics.exposition().decode()
    other = CollectorRegistry()
    Counter("other_things", "Another library's counter.", registry=other).inc()
    assert "other_things_created" in generate_latest(other).decode()  # prometheus_client's default, untouched


def test_each_metrics_has_its_own_registry():
    first, second = Metrics(), Metrics()
    first.reloaded(ok=True)
    assert value(second, "turnout_policy_reloads_total", result="success") is None


def test_money_in_the_tally_stays_decimal():
    tally = finished()
    tally.charge_for(PRICES, FT, USAGE)
    assert tally.cost == Decimal("0.020")
    assert tally.cost_items() == [("x-turnout-cost-usd", "0.02"), ("x-turnout-savings-usd", "0.04")]


def test_a_shadow_copy_is_spend_not_a_request():
    metrics = Metrics()
    shadow = Tally(shadow=True)
    shadow.decided("gpt4", "shadow")
    shadow.charge_for(PRICES, "gpt-4", USAGE)
    metrics.record(shadow)
    assert value(metrics, "turnout_cost_usd_total", route="gpt4", model="gpt-4") == pytest.approx(0.06)
    assert value(metrics, "turnout_tokens_total", route="gpt4", model="gpt-4", kind="prompt") == 1000
    assert value(metrics, "turnout_baseline_cost_usd_total", route="gpt4", model="gpt-4") is None
    assert not [name for name, _ in samples(metrics) if name.startswith(("turnout_requests_total", "turnout_request_"))]


def test_known_routes_start_their_rare_counters_at_zero() -> None:
    metrics = Metrics()
    assert value(metrics, "turnout_cache_lookups_total", route="docs", result="hit") is None
    metrics.routes_known(["docs"])
    for result in ("hit", "miss"):
        assert value(metrics, "turnout_cache_lookups_total", route="docs", result=result) == 0
    assert value(metrics, "turnout_fallbacks_total", route="docs") == 0
    assert value(metrics, "turnout_retries_total", route="docs") == 0


def test_a_rag_answer_without_context_is_counted_by_route() -> None:
    metrics = Metrics()
    metrics.record(finished(route="docs", rag="no-context"))
    metrics.record(finished(route="docs", rag="no-context"))
    metrics.record(finished(route="docs"))  # passages found: not counted
    assert value(metrics, "turnout_rag_no_context_total", route="docs") == 2
    assert value(metrics, "turnout_rag_no_context_total", route="support-ft") is None
