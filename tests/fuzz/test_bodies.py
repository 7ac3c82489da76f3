"""Hostile chat bodies and unknown routes, through the real server, with and without a policy file.

The bodies are valid JSON that a second decode, or an unbounded value, used to turn into a 500 or a
huge upstream answer: a number beyond a double (`1e400`), a 10,000-digit integer, nesting 979 levels
deep and more, invalid UTF-8 inside a string, `n` far out of OpenAI's 1-128. Each is sent streamed and
not (a stream and a policy's route rewrite the body). A body is either refused with an OpenAI-format
400 or answered like any other, never a 5xx, and the server logs no error; `n` out of bounds is a 400
naming `n`, and an `n` OpenAI accepts (`1.0`, `128`) is accepted. Paths Turnout does not serve are an
OpenAI-format 404, whatever they hold: Turnout's own, or under `/v1/` the simulator's (a method a handler there
does not serve is the upstream's to answer); a wrong method on a served path outside `/v1/` is a 405 with `allow`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from tests.fuzz.checks import Reply, problems
from tests.fuzz.conftest import REQUEST_TIMEOUT, SCALE, SEED, StatusTable, Target, log_problems

pytestmark = pytest.mark.fuzz

MESSAGES = '"messages":[{"role":"user","content":"Say hello."}]'
HOSTILE = {
    "number-beyond-a-double": b'{"model":"gpt-4o-mini",%s,"x":1e400}',
    "integer-of-10000-digits": b'{"model":"gpt-4o-mini",%s,"x":' + b"9" * 10_000 + b"}",
    "nesting-979-deep": b'{"model":"gpt-4o-mini",%s,"x":' + b"[" * 979 + b"]" * 979 + b"}",
    "nesting-10000-deep": b'{"model":"gpt-4o-mini",%s,"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "invalid-utf8-in-unknown-field": b'{"model":"gpt-4o-mini",%s,"x":"\xff\xfe"}',
    "invalid-utf8-in-content": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"h\xffi"}]%s}',
}
N_REFUSED = {"n-2pow70": 2**70, "n-0": 0, "n-negative": -1, "n-129": 129}
N_ACCEPTED = {"n-1.0": 1.0, "n-128": 128}
ROW = "hostile chat bodies"


def _chat(stream: bool, **fields: object) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return json.dumps({**body, "stream": True} if stream else body).encode()


def _body(template: bytes, stream: bool) -> bytes:
    messages = MESSAGES.encode()
    if b'"messages"' in template:  # the messages are the hostile part: %s only adds `stream`
        return template % (b',"stream":true' if stream else b"")
    return template % ((b'"stream":true,' if stream else b"") + messages)


@pytest.fixture
def http(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.origin, timeout=REQUEST_TIMEOUT) as client:
        yield client


def _post(http: httpx.Client, target: Target, table: StatusTable, body: bytes, request_id: str) -> Reply:
    target.new_log()
    started = time.monotonic()
    response = http.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json", "x-request-id": request_id}
    )
    row = table.row(target.name, ROW)
    row.statuses[str(response.status_code)] += 1
    row.seconds += time.monotonic() - started
    return Reply.of(response)


def _check(reply: Reply, target: Target, request_id: str, *, stream: bool, expected: tuple[int, ...]) -> list[str]:
    """Everything wrong: the status if it is not one of `expected`, the response's problems, the server's log."""
    found = [] if reply.status in expected else [f"status {reply.status}, not {expected}: {reply.body[:300]!r}"]
    checked = problems(
        reply, request_id=request_id, schema_name="CreateChatCompletionResponse", stream=stream, chat=True
    )
    found += [f"{p.kind}: {p.detail}" for p in checked]
    return found + [f"server log: {line}" for line in log_problems(target.sync())]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_body_is_a_400_or_an_answer(
    target: Target, http: httpx.Client, status_table: StatusTable, name: str, stream: bool
) -> None:
    request_id = f"fuzz-{name}-{'stream' if stream else 'json'}"
    reply = _post(http, target, status_table, _body(HOSTILE[name], stream), request_id)

    found = _check(reply, target, request_id, stream=stream, expected=(200, 400))
    if found:
        pytest.fail("\n".join(found), pytrace=False)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("name", list(N_REFUSED))
def test_n_out_of_bounds_is_a_400_naming_n(
    target: Target, http: httpx.Client, status_table: StatusTable, name: str, stream: bool
) -> None:
    request_id = f"fuzz-{name}-{'stream' if stream else 'json'}"
    reply = _post(http, target, status_table, _chat(stream, n=N_REFUSED[name]), request_id)

    found = _check(reply, target, request_id, stream=stream, expected=(400,))
    if reply.status == 400 and json.loads(reply.body)["error"]["param"] != "n":
        found.append(f"the 400 does not name n: {reply.body[:300]!r}")
    if found:
        pytest.fail("\n".join(found), pytrace=False)


@pytest.mark.parametrize("name", list(N_ACCEPTED))
def test_n_that_openai_accepts_is_accepted(
    target: Target, http: httpx.Client, status_table: StatusTable, name: str
) -> None:
    request_id = f"fuzz-{name}"
    reply = _post(http, target, status_table, _chat(False, n=N_ACCEPTED[name]), request_id)

    found = _check(reply, target, request_id, stream=False, expected=(200,))
    if found:
        pytest.fail("\n".join(found), pytrace=False)


SERVED = {"/v1/chat/completions": "POST", "/chat/completions": "POST", "/v1/models": "GET", "/v1/models/gpt-4": "GET"}
_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=12).filter(
    lambda segment: set(segment) != {"."}  # `.` and `..` are dot-segments, which the client removes
)
# Prefixes that no served path starts with once a segment follows (`/v1/models/` would be a model id).
_PREFIX = st.sampled_from(["/", "/v1/", "/v2/", "/v1/chat/", "/v1/chat/completions/", "/v1/models-", "/_simulator/"])
_UNKNOWN = st.tuples(
    st.builds(
        lambda prefix, segments: prefix + "/".join(segments), _PREFIX, st.lists(_SEGMENT, min_size=1, max_size=3)
    ),
    st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
)
# OPTIONS is left out: outside `/v1/`, the framework answers it on a served path (204 with `allow`).
_WRONG_METHOD = st.sampled_from(
    [
        (path, method)
        for path, served in SERVED.items()
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if method != served
    ]
)


def test_unknown_routes_are_openai_404s_and_wrong_methods_405s(target: Target, status_table: StatusTable) -> None:
    row = status_table.row(target.name, "unknown routes, wrong methods")
    found: dict[str, str] = {}
    http = httpx.Client(base_url=target.origin, timeout=REQUEST_TIMEOUT)

    @seed(SEED)
    @settings(max_examples=max(1, int(60 * SCALE)), deadline=None, database=None)
    @given(st.one_of(_UNKNOWN, _WRONG_METHOD))
    def one(path_method: tuple[str, str]) -> None:
        path, method = path_method
        response = http.request(method, path, headers={"x-request-id": "fuzz-route"})
        row.statuses[str(response.status_code)] += 1
        expected = 405 if path in SERVED and not path.startswith("/v1/") else 404
        for problem in problems(Reply.of(response), request_id="fuzz-route", schema_name=None):
            found.setdefault(problem.kind, f"{method} {path}: {problem.detail}")
        if response.status_code != expected:
            found.setdefault(f"status {response.status_code}", f"{method} {path}: expected {expected}")

    with http:
        target.new_log()
        started = time.monotonic()
        one()
        row.seconds += time.monotonic() - started
        for line in log_problems(target.sync()):
            found.setdefault("server log", line)

    if found:
        pytest.fail("\n".join(f"{kind}: {example}" for kind, example in found.items()), pytrace=False)
