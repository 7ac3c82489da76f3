"""Prometheus' own `promtool check metrics` accepts what `Metrics` exposes (a subprocess: not a unit test)."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal

import pytest

from proxy.accounting.metrics import Metrics
from proxy.accounting.recorder import Recorder
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
    parity = Recorder(metrics).parity  # the parity and canary metrics, with samples
    parity.paired("classify", "ft35", "tie")
    parity.gated("classify", "ft35", "pass", 1.0, 0.94)
    parity.canary_share("classify", 0.5)
    parity.stepped("classify", "up")
    parity.evaluation_spent("classify", "reference", Decimal("0.001"))
    checked = subprocess.run(  # noqa: S603
        [promtool, "check", "metrics"], input=metrics.exposition(), capture_output=True, check=False, timeout=30
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")
