"""Batched metric values (`proxy.accounting.batch`): nothing lost, nothing counted twice, in one process or several.

The multiprocess tests run each "worker" as a real child process writing prometheus_client's files in
one shared directory (the mode is chosen when prometheus_client is imported, and a worker is a pid),
then read the merged exposition in this process, as `/metrics` does.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.batch import FLUSH_SECONDS
from proxy.accounting.metrics import LATENCY_BUCKETS, Metrics
from proxy.accounting.tally import Tally

ROOT = Path(__file__).resolve().parents[2]
# A worker: records `count` requests of `seconds` each, with `usage` prompt tokens, then does `then`.
WORKER = """
import asyncio, os, sys
from proxy.accounting.cost import PriceTable
from proxy.accounting.metrics import Metrics
from proxy.accounting.batch import FLUSH_SECONDS
from proxy.wire.schemas import Usage
from proxy.accounting.tally import Tally

PRICES = PriceTable(baseline_model="gpt-4", known_models=["gpt-4"])
metrics = Metrics(multiprocess_dir=os.environ["PROMETHEUS_MULTIPROC_DIR"])

def request(seconds, prompt):
    tally = Tally(request_id="r", started=10.0, routed=True, endpoint="chat", status=200)
    tally.decided("gpt4", "default")
    tally.upstream_seconds, tally.answered_at, tally.ended_at = seconds / 2, 10.0 + seconds / 2, 10.0 + seconds
    tally.charge_for(PRICES, "gpt-4", Usage(prompt_tokens=prompt, completion_tokens=1, total_tokens=prompt + 1))
    metrics.record(tally)

def many(count, seconds, prompt):
    for _ in range(count):
        request(seconds, prompt)
"""


def run_worker(directory: Path, script: str) -> None:
    code = WORKER + textwrap.dedent(script)
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=60)  # noqa: S603


def merged(directory: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples `/metrics` would serve from `directory` (this process writes nothing there)."""
    text = Metrics(multiprocess_dir=str(directory)).exposition().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


ANSWERED = {
    "route": "gpt4",
    "rule": "default",
    "model": "gpt-4",
    "status_class": "2xx",
    "cache": "bypass",
    "endpoint": "chat",
}
REQUESTS = ("turnout_requests_total", frozenset(ANSWERED.items()))
DURATION = frozenset({"route": "gpt4", "cache": "bypass", "endpoint": "chat"}.items())
PROMPT = ("turnout_tokens_total", frozenset({"route": "gpt4", "model": "gpt-4", "kind": "prompt"}.items()))


def test_two_workers_flushing_at_scrapes_and_at_close_are_merged_exactly_once(tmp_path: Path) -> None:
    # One worker serves a scrape mid-way (a flush), counts more, and stops cleanly (the flush at close).
    run_worker(tmp_path, "many(3, 0.02, 10)\nmetrics.exposition()\nmany(2, 0.02, 10)\nmetrics.close()")
    # The other flushes twice in a row (the second must add nothing) and dies without closing.
    run_worker(tmp_path, "many(4, 3.0, 100)\nmetrics.flush()\nmetrics.flush()\nos._exit(0)")
    samples = merged(tmp_path)
    assert samples[REQUESTS] == 9
    assert samples[PROMPT] == 3 * 10 + 2 * 10 + 4 * 100
    assert samples["turnout_request_duration_seconds_count", DURATION] == 9
    assert samples["turnout_request_duration_seconds_sum", DURATION] == pytest.approx(5 * 0.02 + 4 * 3.0)
    assert samples["turnout_request_duration_seconds_bucket", DURATION | {("le", "0.025")}] == 5
    assert samples["turnout_request_duration_seconds_bucket", DURATION | {("le", "2.5")}] == 5
    assert samples["turnout_request_duration_seconds_bucket", DURATION | {("le", "5.0")}] == 9
    assert samples["turnout_cost_usd_total", frozenset({"route": "gpt4", "model": "gpt-4"}.items())] == pytest.approx(
        (50 + 400) * 0.03 / 1000 + 9 * 0.06 / 1000
    )


def test_the_timer_writes_a_running_worker_s_counts_for_the_others_within_the_interval(tmp_path: Path) -> None:
    # Neither a scrape, nor a flush, nor a close: only the event loop's timer writes these.
    run_worker(
        tmp_path,
        f"""
        async def main():
            metrics.start_flushing(asyncio.get_running_loop())
            many(7, 0.02, 10)
            metrics.in_flight.inc(); metrics.in_flight.inc(); metrics.in_flight.dec()
            await asyncio.sleep({FLUSH_SECONDS * 2.5})
        asyncio.run(main())
        os._exit(0)
        """,
    )
    samples = merged(tmp_path)
    assert samples[REQUESTS] == 7
    assert samples["turnout_requests_in_flight", frozenset()] == 1


def test_what_no_flush_wrote_is_not_in_the_merged_view(tmp_path: Path) -> None:
    """The counter-check of the tests above: a worker killed between flushes loses what it added since."""
    run_worker(tmp_path, "many(3, 0.02, 10)\nmetrics.flush()\nmany(5, 0.02, 10)\nos._exit(0)")
    assert merged(tmp_path)[REQUESTS] == 3


def test_a_closed_worker_leaves_the_in_flight_sum(tmp_path: Path) -> None:
    run_worker(tmp_path, "metrics.in_flight.inc()\nmetrics.flush()\nos._exit(0)")
    run_worker(tmp_path, "metrics.in_flight.inc()\nmetrics.in_flight.inc()\nmetrics.close()")
    assert merged(tmp_path)["turnout_requests_in_flight", frozenset()] == 1


def finished(seconds: float) -> Tally:
    tally = Tally(request_id="r", started=0.0, routed=True, endpoint="chat", status=200)
    tally.decided("gpt4", "default")
    tally.ended_at = seconds
    return tally


def test_histogram_buckets_match_prometheus_client_s_own_observe() -> None:
    """Values on, just under and just over each bound land where `Histogram.observe()` puts them."""
    values = [0.0, *LATENCY_BUCKETS, *(b * 0.999 for b in LATENCY_BUCKETS), *(b * 1.001 for b in LATENCY_BUCKETS)]
    metrics = Metrics()
    registry = CollectorRegistry()
    reference = Histogram(
        "turnout_request_duration_seconds",
        "",
        ["route", "cache", "endpoint"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    for seconds in values:
        metrics.record(finished(seconds))
        reference.labels("gpt4", "bypass", "chat").observe(seconds)
    ours = [line for line in metrics.exposition().decode().splitlines() if line.startswith("turnout_request_duration")]
    theirs = [
        line
        for line in generate_latest(registry).decode().splitlines()
        if not line.startswith(("#", "turnout_request_duration_seconds_created"))  # `Metrics` leaves it out
    ]
    assert ours == theirs


def test_scrapes_from_another_thread_lose_and_double_nothing() -> None:
    """`/metrics` runs in a worker thread while the event loop records: the final total is exact."""
    metrics, count = Metrics(), 20_000
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            metrics.flush()  # what a scrape does first, as often as it can

    scraper = threading.Thread(target=scrape)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the GIL changes hands as often as it can: races show
    scraper.start()
    try:
        for _ in range(count):
            metrics.record(finished(0.01))
            metrics.in_flight.inc()
            metrics.in_flight.dec()
    finally:
        done.set()
        scraper.join()
        sys.setswitchinterval(switch)
    text = metrics.exposition().decode()
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    unanswered = {"route": "gpt4", "rule": "default", "model": "none", "status_class": "2xx", "cache": "bypass"}
    unanswered["endpoint"] = "chat"
    assert samples["turnout_requests_total", frozenset(unanswered.items())] == count
    assert samples["turnout_request_duration_seconds_count", DURATION] == count
    assert samples["turnout_requests_in_flight", frozenset()] == 0
