"""Issue 11, point 3, through the real server: the Redis password never shows, and a bad URL is a clear error.

`redis://host:port/0?password=X` authenticates (redis-py reads it), and the start-up log printed it
whole; a password with a raw `/` passed `turnout check` but made `turnout serve` exit 3 with a
traceback that quoted its first characters. Here a real `redis-server` requires a password that
holds `/`, `+` and `=`, and Turnout is pointed at it in every form redis-py reads.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import delete_prefixed
from tests.e2e.conftest import RunningProcess, clean_env, running, sdk_client, start_turnout, turnout_cli, turnout_env
from tests.redis_server import RedisServer

PASSWORD = f"pw/{uuid.uuid4().hex[:8]}+x=y-redis-secret"
ENCODED = urllib.parse.quote(PASSWORD, safe="")

POLICY = """\
upstreams:
  sim: {{base_url: "{upstream}", api_key: "${{OPENAI_API_KEY}}"}}
routes:
  gpt4: {{upstream: sim, model: gpt-4}}
cache:
  url: "{url}"
  key_prefix: "{prefix}"
  timeout: 5  # a loaded machine must not turn a lookup into a miss
  connect_timeout: 5
rules:
  - name: default
    route: gpt4
"""


def shown_forms() -> list[str]:
    """What must never be shown of the password: itself, encoded, and its first characters."""
    return [PASSWORD, ENCODED, PASSWORD[:10], ENCODED[:10], PASSWORD.split("/", 1)[1][:10]]


@pytest.fixture(scope="module")
def guarded_redis() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD)
    server.start()
    try:
        yield server
    finally:
        server.close()


def write_policy(path: Path, simulator: RunningProcess, url: str, prefix: str = "p") -> Path:
    path.write_text(POLICY.format(upstream=f"{simulator.origin}/v1", url=url, prefix=prefix))
    return path


@pytest.mark.parametrize(
    "template",
    [
        "redis://:{encoded}@127.0.0.1:{port}/0",
        "redis://default:{encoded}@127.0.0.1:{port}/0",
        "redis://127.0.0.1:{port}/0?password={encoded}",
        "redis://127.0.0.1:{port}/0?username=default&password={encoded}",
        "redis://127.0.0.1:{port}?db=0&password={encoded}",
    ],
)
def test_every_url_form_authenticates_and_the_password_never_shows(
    simulator: RunningProcess, guarded_redis: RedisServer, tmp_path: Path, template: str
) -> None:
    url = template.format(encoded=ENCODED, port=guarded_redis.port)
    prefix = f"turnout-e2e-{uuid.uuid4().hex[:12]}"
    policy = write_policy(tmp_path / "policy.yaml", simulator, url, prefix)
    check = turnout_cli("check", str(policy), env=clean_env(OPENAI_API_KEY="sk-placeholder"))
    assert check.returncode == 0, check.stderr
    env = {**turnout_env(simulator), "TURNOUT_CONFIG": str(policy)}
    messages: list[Any] = [{"role": "user", "content": f"Capital of France? {uuid.uuid4().hex[:8]}"}]
    try:
        with running(start_turnout(env)) as turnout, sdk_client(turnout.origin) as sdk:
            first = sdk.chat.completions.with_raw_response.create(model="gpt-4", messages=messages, temperature=0)
            second = sdk.chat.completions.with_raw_response.create(model="gpt-4", messages=messages, temperature=0)
            log = turnout.stderr()
    finally:
        delete_prefixed(f"redis://:{ENCODED}@127.0.0.1:{guarded_redis.port}/0", prefix)
    assert (first.headers["x-turnout-cache"], second.headers["x-turnout-cache"]) == ("miss", "hit")  # authenticated
    assert "response cache: redis at redis://" in log
    assert "failed" not in log
    for form in shown_forms():
        assert form not in log, f"the log shows the Redis password as {form!r}:\n{log}"
        assert form not in check.stdout + check.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:{password}@127.0.0.1:{port}/0",  # the raw `/` moves the password's end into the path
        "redis://default:{password}@127.0.0.1:{port}/0",
        "redis://:{hashed}@127.0.0.1:{port}/0",  # a raw `#` ends the URL inside the password
        "redis://127.0.0.1:{port}/0?password={hashed}",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:{port}/0?passwd={encoded}",  # an option redis-py does not know
    ],
)
def test_a_bad_url_is_refused_by_check_and_serve_alike_naming_the_line_and_no_password(
    simulator: RunningProcess, guarded_redis: RedisServer, tmp_path: Path, url: str
) -> None:
    hashed = PASSWORD.replace("/", "#")
    written = url.format(password=PASSWORD, hashed=hashed, encoded=ENCODED, port=guarded_redis.port)
    policy = write_policy(tmp_path / "policy.yaml", simulator, written)
    env = {**turnout_env(simulator), "TURNOUT_CONFIG": str(policy)}
    results = {
        command: turnout_cli(*args, env=env)
        for command, args in {"check": ["check", str(policy)], "serve": ["serve", "--port", "0"]}.items()
    }
    assert results["check"].returncode == 1
    assert results["serve"].returncode == 2
    for command, result in results.items():
        output = result.stdout + result.stderr
        assert f"{policy}:6: cache.url is not a Redis URL: " in output, output
        assert "Traceback" not in output
        for form in [*shown_forms(), hashed[:10], hashed.split("#", 1)[1][:10]]:
            assert form not in output, f"`turnout {command}` shows the password as {form!r}:\n{output}"


def test_the_warning_of_a_failing_redis_shows_no_password(simulator: RunningProcess, tmp_path: Path) -> None:
    server = RedisServer(password=PASSWORD)
    server.start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0?password={ENCODED}"
        env = {**turnout_env(simulator), "TURNOUT_CONFIG": str(write_policy(tmp_path / "policy.yaml", simulator, url))}
        with running(start_turnout(env)) as turnout, sdk_client(turnout.origin) as sdk:
            server.stop()  # Redis goes away: the next lookup fails and is logged
            sdk.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}], temperature=0)
            log = turnout.stderr()
    finally:
        server.close()
    assert "cache: redis at redis://127.0.0.1:" in log
    assert "failed on get" in log
    for form in shown_forms():
        assert form not in log, f"the log shows the Redis password as {form!r}:\n{log}"
