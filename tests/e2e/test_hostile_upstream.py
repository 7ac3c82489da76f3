"""What a hostile or broken upstream answers, through the real `turnout serve` and its response cache.

The upstream on loopback (`tests.e2e.hostile`) answers 200 with bodies no reader should trust: nesting
of 5,000 levels, `1e400`, a 5,000-digit integer, invalid UTF-8, `"choices": "abc"`, usage of 10^30
tokens, streams with such a chunk first, in the middle or as the usage chunk. Every request carries
`temperature: 0`, so the cache keys it: a first request would store the answer, the next identical ones
(as a completion and as a stream) would replay it. Nothing is ever a 500 or a traceback: an answer
Turnout cannot read is a 502 `upstream_error` (an error event once a stream has begun), is never
cached, and the next request asks the upstream again. A stored entry that cannot be replayed (written
into the shared Redis by another version, say) is a miss, deleted, and answered afresh.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from tests.conftest import delete_prefixed
from tests.e2e.conftest import RunningProcess, clean_env, running, start_turnout
from tests.e2e.hostile import ANSWERS, STREAMS, HostileUpstream, hostile_upstream, nested
from tests.openapi import validate

POLICY = """\
upstreams:
  hostile: {{base_url: "{upstream}", api_key: "${{OPENAI_API_KEY}}"}}
routes:
  main: {{upstream: hostile, model: gpt-4o-mini}}
cache: {{{cache}}}
rules:
  - name: default
    route: main
"""
STRICT = msgspec.json.Decoder()
"""A strict reader: refuses invalid UTF-8, numbers out of range and nesting past the stack, as many clients do."""


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with hostile_upstream() as upstream:
        yield upstream


def serve(hostile: HostileUpstream, folder: Path, cache: str) -> Iterator[RunningProcess]:
    policy = folder / "policy.yaml"
    policy.write_text(POLICY.format(upstream=hostile.base_url, cache=cache), encoding="utf-8")
    env = clean_env(OPENAI_API_KEY=f"sk-hostile-{uuid.uuid4().hex}", TURNOUT_CONFIG=str(policy))
    with running(start_turnout(env)) as process:
        yield process


@pytest.fixture(scope="module")
def turnout(hostile: HostileUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    """Turnout with its in-process cache, its one route on the hostile upstream."""
    yield from serve(hostile, tmp_path_factory.mktemp("memory"), "max_bytes: 1048576")


def body(*, stream: bool, usage: bool = False) -> dict[str, Any]:
    """A deterministic chat request, new each time (so that only its own repeats can hit)."""
    content = f"Say hello. ({uuid.uuid4().hex})"
    payload: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    payload.update(temperature=0, stream=stream)
    if usage:
        payload["stream_options"] = {"include_usage": True}
    return payload


def ask(process: RunningProcess, payload: dict[str, Any], mode: str, **changes: Any) -> httpx.Response:
    with httpx.Client(base_url=process.origin, timeout=30.0) as http:
        response = http.post("/v1/chat/completions", json={**payload, **changes}, headers={"x-hostile": mode})
        response.read()
        return response


def assert_upstream_error(response: httpx.Response) -> None:
    assert response.status_code == 502, response.text[:500]
    payload = response.json()
    validate("ErrorResponse", payload)
    assert payload["error"]["type"] == "upstream_error"
    assert payload["error"]["code"] == "upstream_error"
    assert "upstream 'hostile'" in payload["error"]["message"]


def events(response: httpx.Response) -> list[Any]:
    """The data of each SSE event of a stream, each read by the strict reader (`[DONE]` as a string)."""
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content.endswith(b"data: [DONE]\n\n"), response.content[-300:]
    found = []
    for event in response.content.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: "):
                data = line.removeprefix(b"data: ")
                found.append("[DONE]" if data == b"[DONE]" else STRICT.decode(data))
    return found


def assert_healthy(process: RunningProcess, since: int) -> str:
    """No traceback, no 500 in what `process` logged after `since` characters; the log, to look into."""
    log = process.stderr()[since:]
    assert "Traceback" not in log, log[-3000:]
    assert "unexpected error" not in log, log[-3000:]
    assert '"status":500' not in log, log[-3000:]
    return log


@pytest.mark.parametrize("mode", list(ANSWERS))
def test_a_completion_turnout_cannot_read_is_a_502_never_cached(
    turnout: RunningProcess, hostile: HostileUpstream, mode: str
) -> None:
    since, calls = len(turnout.stderr()), len(hostile.received)
    payload = body(stream=False)

    first = ask(turnout, payload, mode)
    again = ask(turnout, payload, mode)  # would replay a stored entry as a completion
    streamed = ask(turnout, payload, mode, stream=True)  # would replay it as a stream

    for response in (first, again, streamed):
        assert_upstream_error(response)
        assert response.headers["x-turnout-cache"] == "miss"
    assert len(hostile.received) - calls == 3  # each asked the upstream again: nothing was stored
    log = assert_healthy(turnout, since)
    assert "502 UpstreamError: The upstream 'hostile' sent" in log


def content_of(found: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in found
        if isinstance(event, dict)
        for choice in event.get("choices") or ()
    )


@pytest.mark.parametrize("usage", [False, True], ids=["no-usage", "usage"])
@pytest.mark.parametrize("mode", [name for name in STREAMS if name != "stream-ok"])
def test_a_stream_with_a_chunk_turnout_cannot_read_ends_in_an_error_never_cached(
    turnout: RunningProcess, hostile: HostileUpstream, mode: str, usage: bool
) -> None:
    since, calls = len(turnout.stderr()), len(hostile.received)
    payload = body(stream=True, usage=usage)
    _, relayed_first = STREAMS[mode]

    first = ask(turnout, payload, mode)
    again = ask(turnout, payload, mode)  # would replay a stored stream as it came

    for response in (first, again):
        assert response.headers["x-turnout-cache"] == "miss"
        if not relayed_first:  # nothing sent yet: a plain 502
            assert_upstream_error(response)
            continue
        assert response.status_code == 200
        found = events(response)  # every event the client gets can be read
        assert content_of(found) == "Hello"
        error = found[-2]["error"]
        assert error["type"] == "upstream_error"
        assert "upstream 'hostile'" in error["message"]
    # Would assemble a stored stream into a completion: the upstream answers this one soundly.
    assembled = ask(turnout, payload, mode, stream=False)
    assert assembled.status_code == 200, assembled.text[:500]
    assert assembled.headers["x-turnout-cache"] == "miss"
    validate("CreateChatCompletionResponse", assembled.json())
    assert len(hostile.received) - calls == 3
    assert_healthy(turnout, since)


def test_a_sound_answer_is_still_cached_and_replayed_in_both_forms(
    turnout: RunningProcess, hostile: HostileUpstream
) -> None:
    payload = body(stream=True, usage=True)
    calls = len(hostile.received)
    first = ask(turnout, payload, "stream-ok")
    assert first.headers["x-turnout-cache"] == "miss"
    for changes in ({}, {"stream": False}, {"stream_options": None}):
        replayed = ask(turnout, payload, "stream-ok", **changes)
        assert replayed.status_code == 200
        assert replayed.headers["x-turnout-cache"] == "hit"
    assert len(hostile.received) - calls == 1
    assert content_of(events(first)) == "Hello there."


# --- entries already stored that cannot be replayed -----------------------------------------------------------


def _completion_with(member: bytes) -> bytes:
    return b'{"object":"chat.completion",' + member + b',"choices":[]}'


BAD_ENTRIES = {
    "completion nesting 5,000 levels": b"C" + _completion_with(b'"x":' + nested(5_000)),
    "completion with 1e400": b"C" + _completion_with(b'"x":1e400'),
    "completion with invalid UTF-8": b"C" + _completion_with(b'"x":"caf\xe9"'),
    "completion whose choices are a string": b'C{"object":"chat.completion","choices":"abc"}',
    "completion whose message is a string": b'C{"choices":[{"index":0,"message":"abc"}]}',
    "completion whose usage is a string": b'C{"choices":[],"usage":"abc"}',
    "completion that is an array": b"C[1,2,3]",
    "completion that is not JSON": b'C{"choices":',
    "stream nesting 5,000 levels": b'Sdata: {"usage":null,"x":' + nested(5_000) + b"}\n\ndata: [DONE]\n\n",
    "stream whose choices are a string": b'Sdata: {"choices":"abc","usage":null}\n\ndata: [DONE]\n\n',
    "stream whose usage is a string": b'Sdata: {"choices":[],"usage":"abc"}\n\ndata: [DONE]\n\n',
    "stream with invalid UTF-8": b'Sdata: {"choices":[],"usage":null,"x":"caf\xe9"}\n\ndata: [DONE]\n\n',
    "an entry of an unknown kind": b"Zjunk",
    "an empty entry": b"",
}


@pytest.fixture(scope="module")
def shared(
    hostile: HostileUpstream, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningProcess, str]]:
    """Turnout with its cache in Redis under a prefix of its own; the prefix."""
    prefix = f"turnout-e2e-{uuid.uuid4().hex[:12]}"
    cache = f'url: "{redis_url}", key_prefix: "{prefix}", timeout: 5, connect_timeout: 5'
    for process in serve(hostile, tmp_path_factory.mktemp("redis"), cache):
        yield process, prefix
    delete_prefixed(redis_url, prefix)


def entry_keys(redis_url: str, prefix: str) -> set[bytes]:
    with redis.Redis.from_url(redis_url) as client:
        return {key for key in client.scan_iter(match=f"{prefix}:*") if b":lock:" not in key}


def new_entry(redis_url: str, prefix: str, before: set[bytes]) -> bytes:
    """The one entry stored since `before` (it is stored just after the answer is sent: waited for)."""
    deadline = time.monotonic() + 10  # a hang guard, not a measure
    while not (added := entry_keys(redis_url, prefix) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    (key,) = added
    return key


@pytest.mark.parametrize("stream", [False, True], ids=["as-completion", "as-stream"])
@pytest.mark.parametrize("entry", list(BAD_ENTRIES))
def test_a_stored_entry_that_cannot_be_replayed_is_a_miss_and_goes(
    shared: tuple[RunningProcess, str], hostile: HostileUpstream, redis_url: str, entry: str, stream: bool
) -> None:
    turnout, prefix = shared
    since = len(turnout.stderr())
    payload = body(stream=False)
    before = entry_keys(redis_url, prefix)
    assert ask(turnout, payload, "stream-ok").headers["x-turnout-cache"] == "miss"
    key = new_entry(redis_url, prefix, before)
    with redis.Redis.from_url(redis_url) as client:
        client.set(key, BAD_ENTRIES[entry], px=60_000)

    calls = len(hostile.received)
    response = ask(turnout, payload, "stream-ok", stream=stream)

    assert response.status_code == 200, response.text[:500]
    assert response.headers["x-turnout-cache"] == "miss"
    assert len(hostile.received) - calls == 1  # answered afresh
    if stream:
        assert content_of(events(response)) == "Hello there."
    else:
        validate("CreateChatCompletionResponse", response.json())
    with redis.Redis.from_url(redis_url) as client:  # the bad entry went (the fresh answer may have replaced it)
        assert client.get(key) != BAD_ENTRIES[entry]
    log = assert_healthy(turnout, since)
    assert "cannot be replayed" in log
    hit = ask(turnout, payload, "stream-ok")
    assert hit.headers["x-turnout-cache"] == "hit"
    json.loads(hit.text)
