"""Integration fixtures: the official SDK pointed straight at the simulated upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from routes.simulator.server import SimulatorServer


@pytest.fixture
async def sdk(simulator: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    """The async SDK, strict validation on and retries off, with `base_url` the simulator's."""
    client = openai.AsyncOpenAI(
        base_url=simulator.base_url, api_key="sk-simulated", max_retries=0, _strict_response_validation=True
    )
    yield client
    await client.close()
