"""Prometheus' own `promtool check metrics` accepts what `Metrics` exposes (a subprocess: not a unit test)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from proxy.accounting.metrics import Metrics
from proxy.wire.errors import UpstreamTimeoutError
from tests.unit.test_metrics import FT, PRICES, USAGE, finished


def test_promtool_accepts_the_exposition():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: it comes with Debian's `prometheus` package (`make test` installs it)")
    metrics = Metrics()
    for stream in (False, True):
        tally = finished(stream=stream, fallback_from=("gpt4",))
        tally.charge_for(PRICES, FT, USAGE)
        tally.failed_attempt("gpt4", UpstreamTimeoutError("slow"), retried=True)
        tally.embedded(PRICES, "wordllama", 12)
        tally.circuits = [("gpt4", "half_open")]
        metrics.record(tally)
    metrics.reloaded(ok=True)
    checked = subprocess.run(  # noqa: S603
        [promtool, "check", "metrics"], input=metrics.exposition(), capture_output=True, check=False, timeout=30
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")
