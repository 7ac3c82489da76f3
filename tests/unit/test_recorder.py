"""`Recorder`: every measurement reaches the metrics (and a finished request the access log) through it."""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.accesslog import ACCESS_LOGGER, AccessLog
from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
from proxy.accounting.tally import Embedding, Tally
from proxy.breaker import CircuitBreaker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(recorder: Recorder) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(recorder.exposition().decode())
        for sample in family.samples
    }


def circuit(samples: Samples, route: str) -> float | None:
    return samples.get(("turnout_circuit_state", frozenset({("route", route)})))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def finished(*, routed: bool, status: int = 200, endpoint: str = "") -> Tally:
    tally = Tally(request_id="req-1", started=10.0, routed=routed, status=status, endpoint=endpoint)
    tally.decided("gpt4", "default")
    tally.ended_at = 10.25
    return tally


def test_a_finished_chat_request_is_counted_and_logged_and_any_other_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    recorder = Recorder(Metrics(), AccessLog())
    recorder.request(finished(routed=True, endpoint="chat"), "POST", "/v1/chat/completions")
    recorder.request(finished(routed=False, status=404), "GET", "/v1/nowhere")
    samples = scrape(recorder)
    requests = {labels: value for (name, labels), value in samples.items() if name == "turnout_requests_total"}
    labels = {"route": "gpt4", "rule": "default", "model": "none", "status_class": "2xx", "cache": "bypass"}
    assert requests == {frozenset({**labels, "endpoint": "chat"}.items()): 1}
    lines = [json.loads(record.getMessage()) for record in caplog.records if record.name == ACCESS_LOGGER]
    assert [(line["path"], line["status"], line["route"]) for line in lines] == [
        ("/v1/chat/completions", 200, "gpt4"),
        ("/v1/nowhere", 404, None),
    ]


def test_measurements_without_a_request_reach_their_metrics() -> None:
    recorder = Recorder(Metrics())
    shadow = Tally(shadow=True)
    shadow.decided("gpt4-shadow", "shadow")
    shadow.upstream_error("gpt4-shadow", "timeout")
    recorder.shadow(shadow)
    recorder.cache_failed()
    recorder.cache_failed()
    recorder.embedded(Embedding(model="text-embedding-3-small", tokens=7, cost=Decimal("0.0000014")))
    recorder.routes_known(["docs"])
    recorder.reloaded(ok=False)
    samples = scrape(recorder)
    assert samples["turnout_upstream_errors_total", frozenset({("route", "gpt4-shadow"), ("kind", "timeout")})] == 1
    assert samples["turnout_cache_errors_total", frozenset()] == 2
    assert samples["turnout_embedding_tokens_total", frozenset({("model", "text-embedding-3-small")})] == 7
    assert samples["turnout_embedding_cost_usd_total", frozenset({("model", "text-embedding-3-small")})] == (
        pytest.approx(0.0000014)
    )
    assert samples["turnout_fallbacks_total", frozenset({("route", "docs")})] == 0
    assert samples["turnout_policy_reloads_total", frozenset({("result", "failure")})] == 1
    assert not [name for name, _ in samples if name == "turnout_requests_total"]  # a shadow is no request


def test_a_scrape_shows_the_followed_breakers_as_of_then_half_open_included() -> None:
    clock = Clock()
    flaky, steady = CircuitBreaker(1, cooldown=30, clock=clock), CircuitBreaker(1, cooldown=30, clock=clock)
    recorder = Recorder(Metrics())
    assert circuit(scrape(recorder), "flaky") is None  # no breakers followed yet
    recorder.follow_breakers({"flaky": flaky, "steady": steady})
    flaky.record_failure()
    samples = scrape(recorder)
    assert (circuit(samples, "flaky"), circuit(samples, "steady")) == (2, 0)
    clock.now = 30.0  # the cooldown is over: nothing happened but time
    assert circuit(scrape(recorder), "flaky") == 1


def test_after_a_reload_the_scrape_reads_the_new_breakers_only() -> None:
    clock = Clock()
    old, new = CircuitBreaker(1, cooldown=30, clock=clock), CircuitBreaker(1, cooldown=30, clock=clock)
    recorder = Recorder(Metrics())
    recorder.follow_breakers({"a": old, "b": CircuitBreaker(1, cooldown=30, clock=clock)})
    old.record_failure()
    assert circuit(scrape(recorder), "a") == 2
    recorder.follow_breakers({"a": new})
    samples = scrape(recorder)
    assert (circuit(samples, "a"), circuit(samples, "b")) == (0, 0)  # `b` left: its last state stays
    clock.now = 30.0
    old.record_failure()  # a request still on the old policy: it moves its own breaker, not the scrape's
    assert circuit(scrape(recorder), "a") == 0
