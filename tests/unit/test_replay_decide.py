"""`Replay` itself: what counts as moved, a Responses request and its usage, a request the server would refuse."""

from __future__ import annotations

import asyncio
import os
from decimal import Decimal
from pathlib import Path

from proxy.accounting.cost import PriceTable
from proxy.config.settings import Settings, load_settings
from proxy.replay import Replay, usage_of
from tests.exchange_log import exchange

POLICY = """\
upstreams:
  sim: {base_url: "http://127.0.0.1:9/v1"}
routes:
  small: {upstream: sim, model: gpt-4o-mini}
  big: {upstream: sim, model: gpt-4}
rules:
  - name: default
    route: small
"""


def settings(tmp_path: Path) -> Settings:
    path = tmp_path / "candidate.yaml"
    path.write_text(POLICY)
    return load_settings({**os.environ, "TURNOUT_CONFIG": str(path)})


def test_a_fallen_back_exchange_is_moved_only_if_its_first_choice_differs(tmp_path: Path) -> None:
    replay = Replay(settings(tmp_path), PriceTable())

    async def run() -> None:
        # chose small, fell back to big: the candidate's small is what the logged policy chose
        fell_back = await replay.decide(exchange("a", route="big", fallbacks=("small",)))
        plain = await replay.decide(exchange("b", route="big"))
        assert fell_back is not None
        assert plain is not None
        replay.add(fell_back)
        replay.add(plain)

    asyncio.run(run())
    row = replay.rows["default", "small"]
    assert (row.requests, row.moved) == (2, 1)
    assert dict(replay.flows) == {("big", "small"): 1}
    # each: 20 in / 5 out on gpt-4o-mini = 20 x 0.15/1M + 5 x 0.60/1M = 0.000006
    assert row.projected == Decimal("0.000012")


def test_a_responses_usage_is_read_as_prompt_and_completion_tokens() -> None:
    usage = usage_of(
        {
            "input_tokens": 100,
            "output_tokens": 40,
            "total_tokens": 140,
            "input_tokens_details": {"cached_tokens": 60},
            "output_tokens_details": {"reasoning_tokens": 10},
        }
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (100, 40, 60)
    # gpt-4o-mini: 40 uncached x 0.15/1M + 60 cached x 0.075/1M + 40 x 0.60/1M = 0.000006 + 0.0000045 + 0.000024
    assert PriceTable().cost("gpt-4o-mini", usage) == Decimal("0.0000345")
    assert usage_of(None) is None
    assert usage_of({"prompt_tokens": "many"}) is None


def test_a_responses_request_is_decided(tmp_path: Path) -> None:
    replay = Replay(settings(tmp_path), PriceTable())
    request = {"model": "gpt-4", "input": "Hello there"}
    logged = exchange("r", endpoint="responses", request=request, usage={"input_tokens": 20, "output_tokens": 5})
    decided = asyncio.run(replay.decide(logged))
    assert decided is not None
    assert (decided.decision.route, decided.model) == ("small", "gpt-4o-mini")
    bad = asyncio.run(replay.decide(exchange("x", request={"messages": "not a list"})))
    assert bad is None
    assert replay.undecided == {"invalid request": 1}
