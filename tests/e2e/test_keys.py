"""Keys on (`auth: keys`): the official SDK against the real server, every endpoint kind, 401, 403 and 429.

One Turnout with keys on serves the module, its keys and spend in an SQLite file; keys are made with the
real `turnout keys create` and the admin HTTP API. A second server process on the same database shows a
revocation reaching another replica; a restart shows that no spend is lost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    SERVER_KEY,
    RunningProcess,
    clean_env,
    running,
    start_turnout,
    turnout_cli,
)

pytestmark = pytest.mark.e2e

ADMIN_KEY = "adm-e2e-admin-key-0123456789abcdef"
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${SIM_KEY}"}
routes:
  cheap: {upstream: sim, model: cheap-model}
  frontier: {upstream: sim, model: frontier-model}
prices:
  cheap-model: {input: 1.0, output: 2.0}
  frontier-model: {input: 10.0, output: 30.0}
baseline: frontier
auth:
  mode: keys
  refresh: 0.3
  failed_attempts: 1000
  shadow_spend: true
  teams:
    capped: {rpm: 2}
    evaluated: {budget_usd: 0.5, period: day}
rules:
  - name: evaluated
    when: {team: evaluated}
    route: cheap
    shadow: {route: frontier, sample: 1.0}
  - name: default
    route: cheap
"""
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]


def write_policy(tmp: Path) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def keys_env(simulator: RunningProcess, database: Path, policy: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        SIM_URL=f"{simulator.origin}/v1",
        SIM_KEY=SERVER_KEY,
        TURNOUT_CONFIG=str(policy),
        TURNOUT_DATABASE_URL=f"sqlite:///{database}",
        TURNOUT_ADMIN_KEY=ADMIN_KEY,
        **extra,
    )


@pytest.fixture(scope="module")
def setup(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("keys")
    return keys_env(simulator, tmp / "turnout.db", write_policy(tmp))


@pytest.fixture(scope="module")
def keyed(setup: dict[str, str]) -> Iterator[RunningProcess]:
    """Turnout with keys on."""
    with running(start_turnout(setup)) as process:
        yield process


def create_key(env: dict[str, str], name: str, *flags: str) -> str:
    """`turnout keys create NAME FLAGS`: the key it prints (once)."""
    done = turnout_cli("keys", "create", name, *flags, env=env)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert re.fullmatch(r"tk-[A-Za-z0-9_\-]{20,}", key), done.stdout
    return key


_OPEN: list[openai.OpenAI] = []


def sdk(origin: str, key: str) -> openai.OpenAI:
    """The official SDK with `key`, pointed at `origin`; closed when the module's tests are done."""
    client = openai.OpenAI(api_key=key, base_url=f"{origin}/v1", max_retries=0, timeout=20.0)
    _OPEN.append(client)
    return client


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


CALLS: dict[str, Callable[[openai.OpenAI], object]] = {
    "chat": lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
    "chat-stream": lambda c: list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)),
    "responses": lambda c: c.responses.create(model="gpt-4o-mini", input="Say hello"),
    "embeddings": lambda c: c.embeddings.create(model="text-embedding-3-small", input="hello"),
    "completions": lambda c: c.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello"),
    "models": lambda c: c.models.list(),
    "moderations": lambda c: c.moderations.create(input="hello"),
    "files": lambda c: c.files.list(),
}
"""One call of each endpoint kind: the routed ones, the model list and two passed through."""


@pytest.mark.parametrize("kind", CALLS)
def test_no_key_and_a_wrong_key_are_401_on_every_endpoint(keyed: RunningProcess, kind: str) -> None:
    for key in ("", "tk-not-a-key-of-this-deployment-000000", "sk-some-openai-key"):
        with pytest.raises(openai.AuthenticationError) as raised:
            CALLS[kind](sdk(keyed.origin, key or "x").with_options(default_headers={"authorization": key}))
        error = raised.value
        assert error.status_code == 401
        assert isinstance(error.body, dict)
        assert error.body["type"] == "invalid_request_error"
        assert key == "" or error.body["code"] == "invalid_api_key"
        assert key == "" or key not in str(error.body)


@pytest.mark.parametrize("kind", CALLS)
def test_a_valid_key_gets_every_endpoint(keyed: RunningProcess, setup: dict[str, str], kind: str) -> None:
    key = create_key(setup, f"all-{kind}")
    CALLS[kind](sdk(keyed.origin, key))


def test_a_revoked_key_looks_like_an_unknown_one(keyed: RunningProcess, setup: dict[str, str]) -> None:
    revoked = create_key(setup, "to-revoke")
    sdk(keyed.origin, revoked).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    done = turnout_cli("keys", "revoke", "to-revoke", env=setup)
    assert done.returncode == 0, done.stderr
    unknown = _error(keyed.origin, "tk-unknown-key-000000000000000000000")
    deadline = time.monotonic() + 5
    while True:
        answer = _error(keyed.origin, revoked)
        if answer.status_code == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.status_code == 401
    assert answer.json() == unknown.json()


def _error(origin: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{origin}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        timeout=10,
    )


def test_api_key_header_is_accepted_too(keyed: RunningProcess, setup: dict[str, str]) -> None:
    key = create_key(setup, "azure-style")
    answer = httpx.post(
        f"{keyed.origin}/v1/chat/completions",
        headers={"api-key": key},
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def test_a_route_or_model_the_key_may_not_use_is_403(keyed: RunningProcess, setup: dict[str, str]) -> None:
    only_cheap = sdk(keyed.origin, create_key(setup, "only-cheap", "--routes", "cheap"))
    only_cheap.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.PermissionDeniedError) as raised:
        only_cheap.chat.completions.create(model="frontier", messages=MESSAGES)  # a route's name selects it
    assert "frontier" in str(raised.value.body)
    with pytest.raises(openai.PermissionDeniedError):  # embeddings go to the default upstream's route
        only_cheap.embeddings.create(model="text-embedding-3-small", input="hello")
    with pytest.raises(openai.PermissionDeniedError):  # files, batches: the pass-through is a route of its own
        only_cheap.files.list()
    only_cheap.models.list()  # what Turnout answers itself is no route
    mini_only = sdk(keyed.origin, create_key(setup, "mini-only", "--models", "gpt-4o-mini*"))
    mini_only.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    for call in (
        lambda: mini_only.chat.completions.create(model="gpt-4.1", messages=MESSAGES),
        lambda: mini_only.responses.create(model="o3", input="hi"),
        lambda: mini_only.embeddings.create(model="text-embedding-3-large", input="hello"),
    ):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            call()
        assert denied.value.status_code == 403


@pytest.mark.parametrize("kind", ["chat", "responses", "embeddings", "completions", "files"])
def test_requests_per_minute_are_429_with_retry_after(keyed: RunningProcess, setup: dict[str, str], kind: str) -> None:
    client = sdk(keyed.origin, create_key(setup, f"rpm-{kind}", "--rpm", "2"))
    CALLS[kind](client)
    CALLS[kind](client)
    with pytest.raises(openai.RateLimitError) as raised:
        CALLS[kind](client)
    error = raised.value
    assert error.body is not None
    assert isinstance(error.body, dict)
    assert error.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(error.response.headers["retry-after"]) <= 60


def test_a_team_limit_holds_across_its_keys(keyed: RunningProcess, setup: dict[str, str]) -> None:
    first = sdk(keyed.origin, create_key(setup, "capped-1", "--team", "capped"))
    second = sdk(keyed.origin, create_key(setup, "capped-2", "--team", "capped"))
    first.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    second.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as raised:
        first.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "team 'capped'" in str(raised.value.body)


def test_a_spent_budget_is_insufficient_quota(keyed: RunningProcess, setup: dict[str, str]) -> None:
    probe = sdk(keyed.origin, create_key(setup, "probe"))
    raw = probe.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    cost = Decimal(raw.headers["x-turnout-cost-usd"])
    assert cost > 0
    budget = cost * Decimal("2.2")  # the third answer starts with 2 spent of 2.2 (past 80%): admitted; not a fourth
    client = sdk(keyed.origin, create_key(setup, "budgeted", "--budget-usd", str(budget), "--period", "day"))
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    error = raised.value
    assert error.body is not None
    assert isinstance(error.body, dict)
    assert error.body["code"] == "insufficient_quota"
    assert error.body["type"] == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"  # the SDKs do not retry it
    usage = turnout_cli("keys", "usage", "budgeted", "--json", env=setup)
    assert usage.returncode == 0, usage.stderr
    assert '"cost_usd"' in usage.stdout
    metrics = httpx.get(f"{keyed.origin}/metrics", timeout=10).text
    assert 'turnout_budget_soft_exceeded_total{name="budgeted",scope="key"} 1.0' in metrics
    assert 'turnout_limit_refusals_total{limit="budget",name="budgeted",scope="key"} 1.0' in metrics


def _until_refused(client: openai.OpenAI, attempts: int, pause: float) -> tuple[int, openai.RateLimitError | None]:
    """Chat requests until one is refused (or `attempts` are answered): how many were answered, and the refusal."""
    for answered in range(attempts):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        except openai.RateLimitError as refused:
            return answered, refused
        time.sleep(pause)  # what an answer spent is counted once it has ended, in the background
    return attempts, None


def test_tokens_per_minute_are_429_of_type_tokens(keyed: RunningProcess, setup: dict[str, str]) -> None:
    client = sdk(keyed.origin, create_key(setup, "tpm", "--tpm", "20"))  # an answer here has 18 tokens
    answered, refused = _until_refused(client, 5, 0.2)
    assert refused is not None, "the tokens per minute never refused a request"
    assert answered == 2
    assert isinstance(refused.body, dict)
    assert refused.body["type"] == "tokens"
    assert int(refused.response.headers["retry-after"]) >= 1


def test_shadow_copies_spend_the_teams_budget(keyed: RunningProcess, setup: dict[str, str]) -> None:
    # Each answer costs 0.03 on `cheap`; its shadow copy on `frontier` 0.42: with the copies paid, the team's 0.5
    # lasts two requests; without them, sixteen.
    client = sdk(keyed.origin, create_key(setup, "evaluated-1", "--team", "evaluated"))
    answered, refused = _until_refused(client, 6, 0.5)
    assert refused is not None, "the shadow copies were not charged to the team"
    assert "team 'evaluated'" in str(refused.body)
    assert answered == 2


def test_the_key_is_the_caller_and_the_header_is_ignored(keyed: RunningProcess, setup: dict[str, str]) -> None:
    client = sdk(keyed.origin, create_key(setup, "who-am-i", "--team", "analytics"))
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-turnout-caller": "someone-else"}
    )
    deadline = time.monotonic() + 5
    while '"caller":"who-am-i"' not in keyed.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = [line for line in keyed.stderr().splitlines() if '"caller":"who-am-i"' in line]
    assert lines, keyed.stderr()[-2000:]
    assert '"team":"analytics"' in lines[-1]
    assert "someone-else" not in keyed.stderr()
    metrics = httpx.get(f"{keyed.origin}/metrics", timeout=10).text
    assert 'turnout_key_requests_total{key="who-am-i",status_class="2xx",team="analytics"}' in metrics


def test_keys_never_reach_the_log_or_the_upstream(keyed: RunningProcess, setup: dict[str, str]) -> None:
    key = create_key(setup, "secretive")
    sdk(keyed.origin, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _error(keyed.origin, key + "x")
    assert key not in keyed.stderr()
    listing = turnout_cli("keys", "list", "--json", env=setup)
    assert key not in listing.stdout
    assert "secretive" in listing.stdout


def test_the_admin_api(keyed: RunningProcess) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=keyed.origin, headers=headers, timeout=10) as admin:
        check_admin_api(admin, keyed.origin)


def check_admin_api(admin: httpx.Client, origin: str) -> None:
    assert httpx.get(f"{origin}/admin/keys", timeout=10).status_code == 401
    bad = httpx.get(f"{origin}/admin/keys", headers={"authorization": "Bearer nope"}, timeout=10)
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_api_key"
    made = admin.post("/admin/keys", json={"name": "from-admin", "team": "ops", "rpm": 100, "budget_usd": "5"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert made.json()["budget_usd"] == "5"
    assert made.json()["period"] == "month"
    assert admin.post("/admin/keys", json={"name": "from-admin"}).status_code == 409
    assert admin.post("/admin/keys", json={"name": "bad name!"}).status_code == 400
    sdk(origin, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    listed = admin.get("/admin/keys").json()["data"]
    assert any(entry["name"] == "from-admin" for entry in listed)
    assert key not in admin.get("/admin/keys").text
    assert admin.get("/admin/keys/from-admin").json()["state"] == "active"
    assert admin.get("/admin/keys/nobody").status_code == 404
    time.sleep(1.0)  # the ledger writes in batches
    usage = admin.get("/admin/usage", params={"key": "from-admin"}).json()["data"]
    assert usage
    assert usage[0]["requests"] >= 1
    assert Decimal(usage[0]["cost_usd"]) > 0
    revoked = admin.delete("/admin/keys/from-admin")
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True


def test_a_second_replica_sees_a_revocation(keyed: RunningProcess, setup: dict[str, str]) -> None:
    key = create_key(setup, "two-replicas")
    with running(start_turnout(setup)) as other:
        for origin in (keyed.origin, other.origin):
            sdk(origin, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        admin = httpx.delete(
            f"{keyed.origin}/admin/keys/two-replicas", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )
        assert admin.status_code == 200
        deadline = time.monotonic() + 5
        while _error(other.origin, key).status_code != 401:
            assert time.monotonic() < deadline, "the second process still lets the revoked key in"
            time.sleep(0.1)


def test_a_restart_keeps_the_spend(simulator: RunningProcess, tmp_path: Path) -> None:
    env = keys_env(simulator, tmp_path / "turnout.db", write_policy(tmp_path))
    key = create_key(env, "survivor", "--budget-usd", "1000")
    with running(start_turnout(env)) as first:
        for _ in range(3):
            sdk(first.origin, key).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    spent = turnout_cli("keys", "usage", "survivor", "--json", env=env)
    assert spent.returncode == 0, spent.stderr
    assert '"requests": 3' in spent.stdout.replace('"requests":3', '"requests": 3'), spent.stdout


def test_an_address_that_keeps_failing_is_throttled(simulator: RunningProcess, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.replace("failed_attempts: 1000", "failed_attempts: 3"), encoding="utf-8")
    env = keys_env(simulator, tmp_path / "turnout.db", policy)
    key = create_key(env, "neighbour")
    with running(start_turnout(env)) as server:
        statuses = [_error(server.origin, f"tk-guess-{n:030d}").status_code for n in range(5)]
        assert statuses == [401, 401, 401, 429, 429]
        assert _error(server.origin, key).status_code == 200  # a valid key from that address still gets in
        metrics = httpx.get(f"{server.origin}/metrics", timeout=10).text
        assert 'turnout_auth_failures_total{reason="throttled"} 2.0' in metrics


def test_auth_off_with_a_public_address_says_so(simulator: RunningProcess) -> None:
    env = clean_env(OPENAI_BASE_URL=f"{simulator.origin}/v1", OPENAI_API_KEY=SERVER_KEY, TURNOUT_HOST="0.0.0.0")
    with running(start_turnout(env)) as server:
        head = "\n".join(server.stderr().splitlines()[:6])
    assert "auth is off" in head
