"""Secrets redacted by value follow the policy: a reload's new upstream key is redacted at once, the old one still."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.config.settings import load_settings
from proxy.lifespan import open_resources
from proxy.logs import RedactingFormatter
from routes.simulator.server import SimulatorServer

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${SIM_KEY}"}
routes:
  ft: {upstream: sim, model: ft}
rules:
  - name: default
    route: ft
"""
FIRST = "abc123XYZ-first-secret-0f1e2d"
SECOND = "Zx9/q+Lm2=Wp7-second-secret"


@pytest.fixture
def redacted_log() -> Iterator[io.StringIO]:
    """A handler with a `RedactingFormatter` on a logger of its own, as `turnout serve` configures them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    logger = logging.getLogger("turnout.test-secrets")
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


async def test_a_reload_adds_its_secrets_to_the_log_formatter_and_the_upstreams(
    simulator: SimulatorServer, tmp_path: Path, redacted_log: io.StringIO
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = {"SIM_URL": simulator.base_url, "SIM_KEY": FIRST, "TURNOUT_CONFIG": str(policy)}
    logger = logging.getLogger("turnout.test-secrets")
    async with open_resources(load_settings(env), reload_settings=lambda: load_settings(env)) as resources:
        logger.warning("echoed %s and %s", FIRST, SECOND)
        assert redacted_log.getvalue().splitlines()[-1] == f"echoed [redacted] and {SECOND}"

        env["SIM_KEY"] = SECOND  # the key was rotated in the environment the policy reads
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)
        assert resources.reloads == 1

        logger.warning("echoed %s and %s", FIRST, SECOND)
        assert redacted_log.getvalue().splitlines()[-1] == "echoed [redacted] and [redacted]"
        upstream = resources.current.upstreams["sim"]
        assert upstream.redactor.data(f"{FIRST} {SECOND}".encode()) == b"[redacted] [redacted]"
