"""Feedback with keys on: a caller attaches feedback only to its own key's or its own team's exchanges.

Another team's request id is answered as an unknown one (404), so ids cannot be probed across teams, and the
exchange keeps no feedback from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from proxy.traffic import open_traffic_store
from tests.e2e.conftest import (
    SERVER_KEY,
    RunningProcess,
    clean_env,
    new_request_id,
    running,
    start_turnout,
    turnout_cli,
)

POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${SIM_KEY}"}
routes:
  cheap: {upstream: sim, model: gpt-4o-mini}
auth: {mode: keys, refresh: 0.3}
traffic: {enabled: true, log: metadata}
rules:
  - name: default
    route: cheap
"""


@pytest.fixture(scope="module")
def keyed(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("traffic-keys")
    (tmp / "policy.yaml").write_text(POLICY, encoding="utf-8")
    database = f"sqlite:///{tmp / 'turnout.db'}"
    env = clean_env(
        SIM_URL=f"{simulator.origin}/v1",
        SIM_KEY=SERVER_KEY,
        TURNOUT_CONFIG=str(tmp / "policy.yaml"),
        TURNOUT_DATABASE_URL=database,
    )
    keys = {}
    for name, team in (("alice", "support"), ("bob", "support"), ("carol", "billing")):
        done = turnout_cli("keys", "create", name, "--team", team, env=env)
        assert done.returncode == 0, done.stderr
        keys[name] = done.stdout.strip()
    with running(start_turnout(env)) as process:
        yield process.origin, {**keys, "database": database}


def send_feedback(origin: str, key: str, request_id: str, label: str) -> httpx.Response:
    body = {"request_id": request_id, "label": label}
    return httpx.post(f"{origin}/v1/turnout/feedback", json=body, headers={"authorization": f"Bearer {key}"})


async def logged_label(database: str, request_id: str) -> str | None:
    store = open_traffic_store(database)
    try:
        exchange = await store.get(request_id, with_content=False)
    finally:
        await store.close()
    assert exchange is not None
    return exchange.label


def test_feedback_reaches_only_the_callers_own_or_its_teams_exchanges(keyed: tuple[str, dict[str, str]]) -> None:
    origin, keys = keyed
    request_id = new_request_id()
    with openai.OpenAI(api_key=keys["alice"], base_url=f"{origin}/v1", max_retries=0) as alice:
        alice.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-request-id": request_id}
        )
    other_team = send_feedback(origin, keys["carol"], request_id, "from billing")
    assert other_team.status_code == 404, other_team.text
    assert other_team.json()["error"]["param"] == "request_id"
    assert asyncio.run(logged_label(keys["database"], request_id)) is None
    no_key = httpx.post(f"{origin}/v1/turnout/feedback", json={"request_id": request_id, "label": "anonymous"})
    assert no_key.status_code == 401
    own = send_feedback(origin, keys["alice"], request_id, "mine")
    assert own.status_code == 200, own.text
    same_team = send_feedback(origin, keys["bob"], request_id, "a teammate's")
    assert same_team.status_code == 200, same_team.text
    assert asyncio.run(logged_label(keys["database"], request_id)) == "a teammate's"
