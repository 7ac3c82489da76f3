"""Issue 11, point 2, through the real server: a hostile upstream that echoes Turnout's key never gets it to a client.

The upstream on loopback puts the key it receives into the `message`, `param` and `code` of its 400,
422 and 429 errors (raw, percent-encoded, JSON-escaped), into `retry-after`, into a plain-text 500
across the byte where a body is cut, into mid-stream error events and into answers. The keys match
none of the key patterns (`sk-`, `key-`, `bearer <digit>`): only redaction by value removes them.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import RunningProcess, clean_env, free_port, sdk_client, start_process
from tests.e2e.hostile import HostileUpstream, echoes, hostile_upstream

KEYS = {
    "plain": f"abc123XYZ-secret-{uuid.uuid4().hex}",
    "slash": f"abc/def+ghi=jkl%-secret-{uuid.uuid4().hex}",
}
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


def forms(key: str) -> set[str]:
    """Every form of `key` that must not reach a client or a log line."""
    # Its first characters too: a body cut short before it was redacted would leave them.
    return {*echoes(key).values(), urllib.parse.quote_plus(key, safe=""), key[:12]}


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with hostile_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module", params=[("plain", 1), ("slash", 1), ("slash", 2)], ids=lambda p: f"{p[0]}-{p[1]}w")
def keyed(request: pytest.FixtureRequest, hostile: HostileUpstream) -> Iterator[tuple[RunningProcess, str]]:
    """Turnout (one worker, or two) forwarding to the hostile upstream with one of `KEYS`; its log is checked last."""
    name, workers = request.param
    key = KEYS[name]
    port = free_port()
    env = clean_env(OPENAI_BASE_URL=hostile.base_url, OPENAI_API_KEY=key)
    process = start_process("turnout", ["serve", "--port", str(port), "--workers", str(workers)], env, port)
    try:
        process.wait_ready("/healthz")
        yield process, key
        process.stop()
        assert_log_clean(process, key)
    finally:
        process.close()


def assert_log_clean(process: RunningProcess, key: str) -> None:
    log = process.stderr()
    for form in forms(key):
        assert form not in log, f"Turnout's log holds the upstream key as {form!r}:\n{log}"


def assert_clean(response: httpx.Response, key: str) -> None:
    seen = response.text + "".join(f"{name}: {value}\n" for name, value in response.headers.items())
    for form in forms(key):
        assert form not in seen, f"the client saw the upstream key as {form!r}:\n{seen}"


@pytest.mark.parametrize(("mode", "status"), [("400", 400), ("422", 422), ("429", 429), ("500", 502), ("echo", 200)])
def test_an_answer_or_error_echoing_the_key_reaches_the_client_without_it(
    keyed: tuple[RunningProcess, str], mode: str, status: int
) -> None:
    turnout, key = keyed
    response = httpx.post(
        f"{turnout.origin}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"x-hostile": mode},
        timeout=20,
    )
    assert response.status_code == status
    assert_clean(response, key)
    if mode != "echo":
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert "[redacted]" in error["message"]
    if mode == "429":
        assert response.headers["retry-after"] == "[redacted]"


@pytest.mark.parametrize("mode", ["stream-error", "stream-echo"])
def test_a_stream_echoing_the_key_reaches_the_client_without_it(keyed: tuple[RunningProcess, str], mode: str) -> None:
    turnout, key = keyed
    with httpx.stream(
        "POST",
        f"{turnout.origin}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
        headers={"x-hostile": mode},
        timeout=20,
    ) as response:
        response.read()
    assert response.status_code == 200
    assert_clean(response, key)
    assert "[redacted]" in response.text
    assert response.text.endswith("data: [DONE]\n\n")


def test_the_sdk_sees_the_rejection_without_the_key(keyed: tuple[RunningProcess, str]) -> None:
    turnout, key = keyed
    with sdk_client(turnout.origin) as sdk, pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers={"x-hostile": "400"})
    assert caught.value.param is not None
    assert caught.value.code is not None
    for form in forms(key):
        assert form not in caught.value.message
        assert form not in caught.value.param
        assert form not in caught.value.code


def test_an_admin_endpoint_body_never_carries_the_key(keyed: tuple[RunningProcess, str]) -> None:
    turnout, key = keyed
    response = httpx.get(f"{turnout.origin}/v1/models", timeout=20)  # the upstream echoes the key in its list
    assert response.status_code == 200
    assert_clean(response, key)


def test_the_warning_lines_about_upstream_failures_hold_no_key(keyed: tuple[RunningProcess, str]) -> None:
    turnout, key = keyed
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    httpx.post(f"{turnout.origin}/v1/chat/completions", json=body, headers={"x-hostile": "500"}, timeout=20)
    stream = {**body, "stream": True}
    with httpx.stream(
        "POST", f"{turnout.origin}/v1/chat/completions", json=stream, headers={"x-hostile": "stream-error"}, timeout=20
    ) as response:
        response.read()
    log = turnout.stderr()
    assert "502 UpstreamError: The upstream failed with status 500: xxx" in log  # the lines were written
    assert "stream broke off after its first event: The upstream failed mid-stream: upstream exploded" in log
    assert_log_clean(turnout, key)
