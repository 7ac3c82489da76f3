"""The fuzz machinery itself: each check catches what it is for, and a failing request is cut down."""

from __future__ import annotations

import json
from typing import Any

import pytest
from schemathesis import GenerationMode

from tests.e2e.conftest import SERVER_KEY
from tests.fuzz.checks import Problem, Reply, bound_beyond_schema, problems
from tests.fuzz.conftest import log_problems
from tests.fuzz.runner import FuzzRun, Plan, Sent
from tests.unit.test_openapi_schemas import CHUNK, COMPLETION, MODELS

pytestmark = pytest.mark.fuzz

ERROR = {"error": {"message": "Bad.", "type": "invalid_request_error", "param": None, "code": None}}


def reply(status: int, body: Any, content_type: str = "application/json", **headers: str) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    fields = {"content-type": content_type, "content-length": str(len(raw)), "x-request-id": "r1", **headers}
    return Reply(status=status, headers=tuple((k.replace("_", "-"), v) for k, v in fields.items()), body=raw)


def kinds(response: Reply, schema_name: str | None = "CreateChatCompletionResponse", **kwargs: Any) -> list[str]:
    return [p.kind for p in problems(response, request_id="r1", schema_name=schema_name, **kwargs)]


def stream(*payloads: bytes) -> bytes:
    return b"".join(b"data: " + payload + b"\n\n" for payload in payloads)


def test_good_answers_have_no_problems() -> None:
    decided = {"x_turnout_route": "gpt4", "x_turnout_rule": "default"}
    assert kinds(reply(200, COMPLETION, **decided), chat=True) == []
    sse = stream(json.dumps(CHUNK).encode(), b"[DONE]")
    assert kinds(reply(200, sse, "text/event-stream", **decided), stream=True, chat=True) == []
    assert kinds(reply(200, MODELS), "ListModelsResponse") == []
    assert kinds(reply(400, ERROR)) == []
    assert kinds(reply(405, ERROR, allow="POST")) == []


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (reply(400, b"Invalid HTTP request received.", "text/plain; charset=utf-8"), "error is text/plain, not JSON"),
        (reply(500, ERROR), "status 500 type=invalid_request_error param=None"),
        (reply(502, b"Bad Gateway", "text/plain"), "status 502"),
        (reply(400, {"error": {"message": "Bad.", "type": "x"}}), "does not match ErrorResponse"),
        (reply(400, {"error": {**ERROR["error"], "extra": 1}}), "error keys are not message, type, param, code"),
        (reply(400, {"error": {**ERROR["error"], "message": ""}}), "error message or type is empty"),
        (reply(400, b"{not json"), "body is not JSON"),
        (reply(405, ERROR), "405 without allow"),
        (reply(429, ERROR), "429 without retry-after"),
        (reply(200, {**COMPLETION, "choices": None}), "does not match CreateChatCompletionResponse"),
        (reply(200, COMPLETION), "chat answer without x-turnout-route and x-turnout-rule"),
        (reply(400, {"error": {**ERROR["error"], "message": SERVER_KEY}}), "the upstream key reached the client"),
        (reply(302, b""), "unexpected status 302"),
    ],
)
def test_each_check_catches_its_problem(response: Reply, kind: str) -> None:
    assert kind in kinds(response, chat=True)


def test_header_checks() -> None:
    good = reply(400, ERROR)
    twice = Reply(status=400, headers=(*good.headers, ("content-type", "text/plain")), body=good.body)
    wrong_length = Reply(
        status=400, headers=(*good.headers[:1], ("content-length", "1"), good.headers[2]), body=good.body
    )

    assert "content-type appears 2 times" in kinds(twice)
    assert "content-length is not the body's length" in kinds(wrong_length)
    assert "x-request-id is not echoed" in [p.kind for p in problems(good, request_id="r2", schema_name=None)]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (stream(json.dumps(CHUNK).encode()), "stream does not end with one [DONE]"),
        (stream(json.dumps(CHUNK).encode(), b"[DONE]") + b"data: {", "stream ends inside an event"),
        (stream(json.dumps({"error": ERROR["error"]}).encode(), b"[DONE]"), "stream carries an error event"),
        (stream(json.dumps({**CHUNK, "object": "chat.completion"}).encode(), b"[DONE]"), "does not match"),
    ],
)
def test_stream_checks(body: bytes, kind: str) -> None:
    found = kinds(reply(200, body, "text/event-stream", x_turnout_route="a", x_turnout_rule="b"), stream=True)
    assert any(k.startswith(kind) for k in found), found


def test_log_problems_are_errors_and_tracebacks_only() -> None:
    log = "\n".join(
        [
            "2026-12-03 10:21:46,663 WARNING uvicorn.error: Invalid HTTP request received.",
            "2026-12-03 10:21:46,664 INFO turnout.access: {}",
            "2026-12-03 10:22:46,834 ERROR turnout.api: unexpected error on POST /v1/chat/completions",
            "Traceback (most recent call last):",
            '  File "x.py", line 1, in <module>',
        ]
    )
    assert log_problems(log) == log.splitlines()[2:4]


class FloatN(FuzzRun):
    """A run whose "server" refuses exactly the bodies with a float `n`, and counts what it was sent."""

    def __init__(self, mode: GenerationMode = GenerationMode.NEGATIVE) -> None:
        self.plan = Plan("POST /chat/completions", mode, 1)
        self.sent: list[Sent] = []

    def exchange(self, sent: Sent) -> tuple[str, list[Problem]]:
        self.sent.append(sent)
        refused = isinstance(sent.json, dict) and isinstance(sent.json.get("n"), float)
        return ("400", [Problem("refused")]) if refused else ("200", [])


def test_a_failing_request_is_cut_down_to_what_shows_the_problem() -> None:
    messages = [{"role": "user", "content": "a", "name": "b"}, {"role": "developer", "content": "c"}]
    body = {"model": "m", "temperature": 1, "n": 1.0, "messages": messages, "stream": False}
    run = FloatN()

    cut = run._cut_down("refused", Sent("POST", "http://t/v1/chat/completions", {"A": "1", "B": "2"}, json=body))

    assert cut.headers == {}
    assert cut.json == {"n": 1.0}
    assert len(run.sent) < 20


def test_valid_data_stays_valid_while_it_is_cut_down() -> None:
    messages = [{"role": "user", "content": "a", "name": "b"}, {"role": "developer", "content": "c"}]
    body = {"model": "m", "temperature": 1, "n": 1.0, "messages": messages}

    cut = FloatN(GenerationMode.POSITIVE)._cut_down(
        "refused", Sent("POST", "http://t/v1/chat/completions", {}, json=body)
    )

    assert cut.json == {"model": "m", "n": 1.0, "messages": [{"role": "user", "content": "a"}]}


def test_a_message_field_is_cut_alone() -> None:
    class NeedsName(FloatN):
        def exchange(self, sent: Sent) -> tuple[str, list[Problem]]:
            named = any("name" in message for message in sent.json.get("messages", []))
            return ("400", [Problem("refused")]) if named else ("200", [])

    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b", "name": "x"}]
    body = {"model": "m", "messages": messages}

    cut = NeedsName()._cut_down("refused", Sent("POST", "http://t/v1/chat/completions", {}, json=body))

    assert cut.json == {"messages": [{"name": "x"}]}


@pytest.mark.parametrize(
    ("param", "code", "allowed"),
    [
        ("max_completion_tokens", "integer_below_min_value", True),
        ("logit_bias.50256", "integer_above_max_value", True),
        ("n", "integer_above_max_value", False),  # the schema states n's bounds: a spec-valid n is never refused
        ("max_tokens", "invalid_type", False),
        ("model", None, False),
    ],
)
def test_only_the_bounds_beyond_the_schema_may_refuse_a_spec_valid_request(param, code, allowed):
    error = {"error": {"message": "m", "type": "invalid_request_error", "param": param, "code": code}}
    reply = Reply(status=400, headers=(("content-type", "application/json"),), body=json.dumps(error).encode())
    assert bound_beyond_schema(reply) is allowed
    assert not bound_beyond_schema(Reply(status=500, headers=reply.headers, body=reply.body))
