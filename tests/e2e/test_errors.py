"""Errors through the real server: upstream faults and invalid requests, as the official SDK sees them."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import httpx
import openai
import pytest

from tests.e2e.conftest import SERVER_KEY, RunningProcess, SimulatorCalls, new_request_id
from tests.openapi import validate

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello."}]


def fault(name: str) -> dict[str, str]:
    return {"x-simulated-fault": name}


def check_error_body(response: httpx.Response | Any) -> dict[str, Any]:
    """The `error` object of an error response, after checking it against OpenAI's `ErrorResponse`."""
    body: dict[str, Any] = response.json()
    validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] is None or isinstance(error["code"], str)
    return error


# --- upstream faults -----------------------------------------------------------------------------------------


def test_upstream_400_is_a_bad_request_with_its_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault("400"))

    assert caught.value.status_code == 400
    assert "Simulated error 400." in caught.value.message
    assert caught.value.param == "messages"
    check_error_body(caught.value.response)


def test_upstream_422_is_unprocessable(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault("422"))

    assert caught.value.status_code == 422
    assert "Simulated error 422." in caught.value.message
    check_error_body(caught.value.response)


@pytest.mark.parametrize("status", ["401", "403", "404"])
def test_upstream_auth_and_not_found_are_bad_gateway(client: openai.OpenAI, status: str) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault(status))

    assert caught.value.status_code == 502
    error = check_error_body(caught.value.response)
    assert "sk-" not in error["message"]
    assert "sk-" not in caught.value.response.text


def test_upstream_429_keeps_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault("429"))

    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "1"
    check_error_body(caught.value.response)


@pytest.mark.parametrize("name", ["500", "text-500"])
def test_upstream_500_is_bad_gateway(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault(name))

    assert caught.value.status_code == 502
    check_error_body(caught.value.response)


def test_upstream_timeout_is_gateway_timeout(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault("timeout"))

    assert caught.value.status_code == 504
    check_error_body(caught.value.response)


@pytest.mark.parametrize(("fault_name", "reason"), [("midstream", "mid-stream"), ("disconnect", "broke off")])
def test_a_stream_failing_after_two_chunks_raises_during_iteration(
    client: openai.OpenAI, fault_name: str, reason: str
) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_headers=fault(fault_name)
    )

    received: list[Any] = []
    with stream, pytest.raises(openai.APIError) as caught:
        received.extend(stream)  # keeps the chunks that arrived before the error

    assert len(received) == 2
    assert reason in caught.value.message


def stream_payloads(http: httpx.Client, headers: dict[str, str]) -> list[str]:
    """The `data:` payloads of a streamed chat completion sent with `headers`."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200
        return [line.removeprefix("data:").strip() for line in response.iter_lines() if line.startswith("data:")]


@pytest.mark.parametrize("name", ["midstream", "disconnect"])
def test_broken_stream_ends_with_one_error_event_then_done(http: httpx.Client, name: str) -> None:
    payloads = stream_payloads(http, fault(name))

    # Two chunks, then exactly one error event (the stream's final event), then [DONE].
    assert payloads[-1] == "[DONE]"
    validate("ErrorResponse", json.loads(payloads[-2]))
    assert len(payloads) == 4, payloads
    for payload in payloads[:-2]:
        validate("CreateChatCompletionStreamResponse", json.loads(payload))


def test_stream_rate_limited_before_the_first_byte_raises_at_create(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, extra_headers=fault("429"))

    response = caught.value.response
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["retry-after"] == "1"
    check_error_body(response)


# --- invalid requests ----------------------------------------------------------------------------------------


def post_raw(http: httpx.Client, content: bytes, content_type: str = "application/json") -> httpx.Response:
    return http.post("/v1/chat/completions", content=content, headers={"content-type": content_type})


@pytest.mark.parametrize(
    ("content", "param"),
    [
        pytest.param(b'{"model": "gpt-4", "messages": [', None, id="malformed-json"),
        pytest.param(b'["model", "messages"]', None, id="not-an-object"),
        pytest.param(b'{"messages": [{"role": "user", "content": "hi"}]}', "model", id="missing-model"),
        pytest.param(b'{"model": "gpt-4", "messages": "hi"}', "messages", id="messages-not-a-list"),
        pytest.param(b'{"model": "gpt-4", "messages": []}', "messages", id="messages-empty"),
        pytest.param(b'{"model": "gpt-4", "messages": [{"content": "hi"}]}', "messages[0].role", id="no-role"),
    ],
)
def test_invalid_body_is_400_with_param(http: httpx.Client, content: bytes, param: str | None) -> None:
    response = post_raw(http, content)

    assert response.status_code == 400
    error = check_error_body(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_sdk_invalid_messages_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=cast("Any", 42))

    assert caught.value.param == "messages"
    check_error_body(caught.value.response)


def test_unknown_route_is_404(http: httpx.Client) -> None:
    response = http.get("/v1/no-such-endpoint")

    assert response.status_code == 404
    check_error_body(response)
    assert response.headers.get("x-request-id")


def test_sdk_unknown_route_is_not_found(client: openai.OpenAI) -> None:
    """Passed through (issue 13) to the simulator, which has no such endpoint: its 404, in OpenAI's form."""
    with pytest.raises(openai.NotFoundError):
        client.get("/no-such-endpoint", cast_to=object)


def _count_input_tokens(client: openai.OpenAI, headers: dict[str, str]) -> object:
    if hasattr(client.responses, "input_tokens"):  # openai 2.x may lack it: then the SDK's own generic call
        return client.responses.input_tokens.count(model=MODEL, input="Hi", extra_headers=headers)
    body = {"model": MODEL, "input": "Hi"}
    return client.post("/responses/input_tokens", body=body, cast_to=object, options={"headers": headers})


NOT_SERVED: list[tuple[str, str, Callable[[openai.OpenAI, dict[str, str]], object]]] = [
    ("GET", "/v1/chat/completions", lambda client, headers: client.chat.completions.list(extra_headers=headers)),
    (
        "GET",
        "/v1/chat/completions/chatcmpl-1",
        lambda client, headers: client.chat.completions.retrieve("chatcmpl-1", extra_headers=headers),
    ),
    (
        "POST",
        "/v1/chat/completions/chatcmpl-1",
        lambda client, headers: client.chat.completions.update("chatcmpl-1", metadata={}, extra_headers=headers),
    ),
    (
        "DELETE",
        "/v1/chat/completions/chatcmpl-1",
        lambda client, headers: client.chat.completions.delete("chatcmpl-1", extra_headers=headers),
    ),
    (
        "GET",
        "/v1/chat/completions/chatcmpl-1/messages",
        lambda client, headers: client.chat.completions.messages.list("chatcmpl-1", extra_headers=headers),
    ),
    (
        "DELETE",
        "/v1/models/ft:gpt-4o-mini:acme::abc",
        lambda client, headers: client.models.delete("ft:gpt-4o-mini:acme::abc", extra_headers=headers),
    ),
    ("POST", "/v1/responses/input_tokens", _count_input_tokens),
]


@pytest.mark.parametrize(("method", "path", "call"), NOT_SERVED, ids=[path for _, path, _ in NOT_SERVED])
def test_what_turnout_does_not_serve_under_v1_is_the_upstream_s_to_answer(
    client: openai.OpenAI,
    simulator_call: SimulatorCalls,
    method: str,
    path: str,
    call: Callable[[openai.OpenAI, dict[str, str]], object],
) -> None:
    """Never a 405: the stored chat completions, a fine-tuned model's deletion, ... go to the upstream.

    The simulator has none of them, and answers as OpenAI answers a path it does not have.
    """
    request_id = new_request_id()
    with pytest.raises(openai.NotFoundError) as caught:
        call(client, {"x-request-id": request_id})

    assert caught.value.response.json()["error"]["message"] == f"Invalid URL ({method} {path})"  # the upstream's
    check_error_body(caught.value.response)
    record = simulator_call(request_id)
    assert (record["path"], record["outcome"]) == (path, "not_found")


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    padding = "x" * (17 * 1024 * 1024)
    content = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": padding}]}).encode()

    response = post_raw(http, content)

    assert response.status_code == 413
    check_error_body(response)


def test_text_plain_body_is_415(http: httpx.Client) -> None:
    content = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()

    response = post_raw(http, content, content_type="text/plain")

    assert response.status_code == 415
    check_error_body(response)


# --- secrets -------------------------------------------------------------------------------------------------


def test_logs_never_contain_the_upstream_key(
    client: openai.OpenAI, turnout: RunningProcess, simulator: RunningProcess
) -> None:
    # Make sure the server has logged something about failing upstreams before looking.
    for name in ("401", "500"):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=fault(name))

    turnout_log = turnout.stderr()
    assert "Forwarding to upstream" in turnout_log
    assert "502" in turnout_log
    assert SERVER_KEY not in turnout_log
    assert SERVER_KEY not in simulator.stderr()
