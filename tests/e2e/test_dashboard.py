"""The Grafana dashboard against the real thing: Debian's Prometheus scrapes `turnout serve --workers 2`.

A short load goes through two routes with streams, fallbacks, retries, a failed request and a policy
reload; then every panel query of `helm/turnout/dashboards/turnout.json` runs through Prometheus' HTTP
API and must return data, and `promtool check metrics` must accept `/metrics`. The totals Prometheus
sees must equal the requests sent although two workers answered them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import delete_prefixed
from tests.e2e.conftest import ROOT, RunningProcess, free_port, running, start_turnout, turnout_env
from tests.e2e.test_policy import FT
from tests.e2e.test_policy import POLICY as POLICY_FILE

DASHBOARD = ROOT / "helm" / "turnout" / "dashboards" / "turnout.json"
# test_policy's two routes and rules (gpt4 for tools, support-ft falling back to gpt4), with a retry.
POLICY = f"{POLICY_FILE}retry: {{attempts: 1, backoff: 0.01}}\n"
MESSAGES: Any = [{"role": "user", "content": "Where is my order?"}]
TOOLS: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
LOAD_SECONDS = 6.0
CACHE_PANELS = {"Cache hit ratio"}
"""Panels that need a cache hit: the load sends one, through a Redis both workers share."""
# Grafana's variables, as Grafana would fill them in for "All routes" over the test's few seconds.
VARIABLES = {"$__rate_interval": "15s", "$__range": "1m", "$route": ".*"}


def prometheus_tools() -> tuple[str, str]:
    """`prometheus` and `promtool` from Debian's package; installed here when missing and we are root."""
    if not (shutil.which("prometheus") and shutil.which("promtool")) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)  # noqa: S607
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],  # noqa: S607
            check=False,
            env=env,
            capture_output=True,
        )
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        pytest.fail(
            "Debian's `prometheus` package (which brings `prometheus` and `promtool`) is missing and could not be "
            "installed: run `apt-get update && apt-get install -y prometheus` as root (`make test` does this)."
        )
    return prometheus, promtool


@dataclass
class Prometheus:
    origin: str
    process: subprocess.Popen[bytes]
    log: Path

    def query_range(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
        response = httpx.get(f"{self.origin}/api/v1/query_range", params=params, timeout=10.0)
        body = response.json()
        assert response.status_code == 200, f"{expr}: {body}"
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.origin}/api/v1/query", params={"query": expr}, timeout=10.0)
        assert response.status_code == 200, response.text
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result


def start_prometheus(binary: str, target: str, workdir: Path) -> Prometheus:
    """Prometheus on a free loopback port, scraping `target` every second, its storage in `workdir`."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: turnout\n    static_configs: [{{targets: ['{target}']}}]\n",
        encoding="utf-8",
    )
    log = workdir / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - Debian's binary, fixed arguments
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(origin=f"http://127.0.0.1:{port}", process=process, log=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{prometheus.origin}/-/ready", timeout=1.0).status_code == 200:
                return prometheus
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"prometheus was not ready within 30 s:\n{log.read_text()}")


def _wait_for_first_scrape(prometheus: Prometheus) -> None:
    """Prometheus applies its targets a few seconds after it is ready: the load starts once it scrapes."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(series["value"][1] == "1" for series in prometheus.query('up{job="turnout"}')):
            return
        time.sleep(0.2)
    pytest.fail(f"prometheus never scraped Turnout:\n{prometheus.log.read_text()}")


@dataclass
class LoadRun:
    """What the load sent and saw."""

    turnout: RunningProcess
    prometheus: Prometheus
    promtool: str
    started: float
    ended: float = 0.0
    requests: int = 0
    workers: set[str] = field(default_factory=set)
    routes: set[str] = field(default_factory=set)
    fallbacks: int = 0
    failures: int = 0
    costs: list[str] = field(default_factory=list)
    cache_results: list[str | None] = field(default_factory=list)


def _client(origin: str) -> openai.OpenAI:
    # `connection: close`: a new connection per request, so that both workers get requests.
    return openai.OpenAI(
        api_key="sk-e2e-client",
        base_url=f"{origin}/v1",
        max_retries=0,
        timeout=20.0,
        default_headers={"connection": "close"},
    )


def _send(run: LoadRun, client: openai.OpenAI, *, stream: bool = False, **kwargs: Any) -> Mapping[str, str] | None:
    """One chat request; returns the response headers, or None for an error response."""
    run.requests += 1
    try:
        if stream:
            with client.chat.completions.with_streaming_response.create(
                model="gpt-4o", messages=MESSAGES, stream=True, **kwargs
            ) as response:
                for _ in response.iter_lines():
                    pass
                headers: Mapping[str, str] = response.headers
        else:
            headers = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, **kwargs
            ).headers
    except openai.APIStatusError:
        run.failures += 1
        return None
    run.workers.add(headers["x-request-id"][:20])  # `req_` + the worker's own random prefix
    run.routes.add(headers["x-turnout-route"])
    run.fallbacks += "x-turnout-fallback-from" in headers
    if "x-turnout-cost-usd" in headers:
        run.costs.append(headers["x-turnout-cost-usd"])
    return headers


def _load(run: LoadRun, client: openai.OpenAI, policy: Path) -> None:
    """Two routes, streams, a fallback with retries, a failed request, a reload, a repeated request."""
    fault_ft = {"x-simulated-fault": "500", "x-simulated-fault-for": FT}
    deadline = time.monotonic() + LOAD_SECONDS
    round_ = 0
    while time.monotonic() < deadline or len(run.workers) < 2:
        assert round_ < 200, f"only {len(run.workers)} worker(s) answered in 200 rounds"
        _send(run, client)
        _send(run, client, stream=True)
        _send(run, client, tools=TOOLS)
        _send(run, client, stream=True, tools=TOOLS)
        if round_ % 2 == 0:
            _send(run, client, extra_headers=fault_ft)
        if round_ == 2:
            assert _send(run, client, extra_headers={"x-simulated-fault": "500"}) is None
            policy.write_text(policy.read_text(encoding="utf-8") + "# reloaded\n", encoding="utf-8")
        if round_ == 4:  # the same deterministic request twice: the second is a cache hit
            for _ in range(2):
                headers = _send(run, client, temperature=0)
                run.cache_results.append(headers.get("x-turnout-cache") if headers is not None else None)
        round_ += 1
        time.sleep(0.15)


@pytest.fixture(scope="module")
def loaded(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LoadRun]:
    prometheus_binary, promtool = prometheus_tools()
    workdir = Path(tempfile.mkdtemp(prefix="turnout-prometheus-"))
    policy = Path(tmp_path_factory.mktemp("policy")) / "policy.yaml"
    # Two workers: the cache must be the Redis they share for the repeated request to hit on either.
    prefix = f"turnout-e2e-{uuid.uuid4().hex[:12]}"
    policy.write_text(f'{POLICY}cache: {{url: "{redis_url}", key_prefix: {prefix}}}\n', encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1", TURNOUT_WORKERS="2")
    try:
        with running(start_turnout(env)) as turnout:
            prometheus = start_prometheus(prometheus_binary, f"127.0.0.1:{turnout.port}", workdir)
            try:
                _wait_for_first_scrape(prometheus)
                run = LoadRun(turnout=turnout, prometheus=prometheus, promtool=promtool, started=time.time())
                with _client(turnout.origin) as client:
                    _load(run, client, policy)
                run.ended = time.time()
                yield run
            finally:
                prometheus.process.terminate()
                prometheus.process.wait(timeout=10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        delete_prefixed(redis_url, prefix)


def _panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = []
    for panel in dashboard["panels"]:
        panels.extend([panel, *panel.get("panels", [])])
    return [panel for panel in panels if panel.get("targets")]


def _expr(template: str) -> str:
    for name, value in VARIABLES.items():
        template = template.replace(name, value)
    assert "$" not in template, f"a Grafana variable the test does not fill in: {template}"
    return template


def _finite_points(result: list[dict[str, Any]]) -> int:
    return sum(1 for series in result for _, value in series["values"] if math.isfinite(float(value)))


def _wait_for_totals(run: LoadRun) -> float:
    """Wait until Prometheus has scraped the last request; returns the total it sees."""
    deadline = time.monotonic() + 20
    seen = 0.0
    while time.monotonic() < deadline:
        result = run.prometheus.query("sum(turnout_requests_total)")
        seen = float(result[0]["value"][1]) if result else 0.0
        if seen >= run.requests:
            return seen
        time.sleep(0.5)
    return seen


def _run_panel(run: LoadRun, panel: dict[str, Any]) -> list[str]:
    """The panel's queries that returned no finite value, with what they returned."""
    empty = []
    for target in panel["targets"]:
        expr = _expr(target["expr"])
        result = run.prometheus.query_range(expr, run.started - 5, time.time())
        if _finite_points(result) == 0:
            empty.append(f"{panel['title']!r}: {expr} -> {json.dumps(result)[:300]}")
    return empty


def test_the_load_went_through_both_workers_and_both_routes(loaded: LoadRun) -> None:
    assert len(loaded.workers) == 2
    assert loaded.routes == {"support-ft", "gpt4"}
    assert loaded.fallbacks >= 2
    assert loaded.failures == 1
    assert loaded.costs
    assert all(re.fullmatch(r"\d+(\.\d+)?", cost) for cost in loaded.costs)


def test_prometheus_counts_every_request_once_across_workers(loaded: LoadRun) -> None:
    assert _wait_for_totals(loaded) == loaded.requests
    by_route = {
        series["metric"]["route"]: float(series["value"][1])
        for series in loaded.prometheus.query("sum by (route) (turnout_requests_total)")
    }
    assert set(by_route) == {"support-ft", "gpt4"}
    text = httpx.get(f"{loaded.turnout.origin}/metrics", timeout=10.0).text
    scraped = sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("turnout_requests_total{")
    )
    assert scraped == loaded.requests


def test_every_panel_query_returns_data(loaded: LoadRun) -> None:
    _wait_for_totals(loaded)
    panels = [panel for panel in _panels() if panel["title"] not in CACHE_PANELS]
    assert len(panels) >= 15
    empty = [line for panel in panels for line in _run_panel(loaded, panel)]
    assert empty == [], "panel queries without data:\n" + "\n".join(empty)


def test_the_cache_hit_ratio_panel_returns_data(loaded: LoadRun) -> None:
    assert loaded.cache_results == ["miss", "hit"]
    _wait_for_totals(loaded)
    empty = [line for panel in _panels() if panel["title"] in CACHE_PANELS for line in _run_panel(loaded, panel)]
    assert empty == [], "\n".join(empty)


def test_promtool_accepts_the_metrics(loaded: LoadRun) -> None:
    text = httpx.get(f"{loaded.turnout.origin}/metrics", timeout=10.0).content
    assert b"turnout_requests_total" in text
    checked = subprocess.run(  # noqa: S603
        [loaded.promtool, "check", "metrics"], input=text, capture_output=True, check=False, timeout=30
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")
