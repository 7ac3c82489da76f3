"""`proxy.wire.errors`: the class tree, the OpenAI error body, key redaction and upstream status mapping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.wire.errors import (
    InvalidRequestError,
    KnowledgeUnavailableError,
    MethodNotAllowedError,
    NotFoundError,
    ProxyError,
    RequestTooLargeError,
    RouteUnavailableError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    error_body,
    redact,
    upstream_status_error,
    upstream_stream_error,
)
from proxy.wire.redaction import Redactor

KEY = "sk-abc123def456ghi789jkl"
PROJECT_KEY = "sk-proj-AbC123_dEf-456xyzQRS"


def decoded(body: bytes) -> Any:
    return json.loads(body)


# --- the class tree ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "parent", "status", "type_", "code"),
    [
        (ProxyError, Exception, 500, "api_error", None),
        (InvalidRequestError, ProxyError, 400, "invalid_request_error", None),
        (NotFoundError, InvalidRequestError, 404, "invalid_request_error", "not_found"),
        (MethodNotAllowedError, InvalidRequestError, 405, "invalid_request_error", "method_not_allowed"),
        (RequestTooLargeError, InvalidRequestError, 413, "invalid_request_error", "request_too_large"),
        (UnsupportedMediaTypeError, InvalidRequestError, 415, "invalid_request_error", "unsupported_media_type"),
        (UpstreamError, ProxyError, 502, "upstream_error", "upstream_error"),
        (UpstreamRejectedError, UpstreamError, 400, "invalid_request_error", None),
        (UpstreamRateLimitError, UpstreamError, 429, "rate_limit_error", "rate_limit_exceeded"),
        (UpstreamTimeoutError, UpstreamError, 504, "upstream_error", "upstream_timeout"),
    ],
)
def test_class_tree(cls, parent, status, type_, code):
    assert cls.__bases__ == (parent,)
    assert cls.status_code == status
    assert cls.type == type_
    assert cls.code == code
    error = cls("something went wrong")
    assert error.status == status
    assert error.instance_code == code
    assert error.param is None
    assert error.headers == {}
    assert error.upstream_status is None
    assert decoded(error.body()) == {
        "error": {"message": "something went wrong", "type": type_, "param": None, "code": code}
    }


@pytest.mark.parametrize(
    ("error", "route_failure", "retryable", "kind"),
    [
        (upstream_status_error(429, b""), True, True, "rate_limit"),
        (upstream_status_error(500, b""), True, True, "server_error"),
        (upstream_status_error(503, b""), True, True, "server_error"),
        (upstream_status_error(418, b""), True, True, "server_error"),
        (upstream_status_error(401, b""), True, False, "auth"),
        (upstream_status_error(403, b""), True, False, "auth"),
        (upstream_status_error(404, b""), True, False, "not_found"),
        (upstream_status_error(400, b""), False, False, "rejected"),
        (upstream_status_error(422, b""), False, False, "rejected"),
        (UpstreamError("refused"), True, True, "connection"),
        (UpstreamTimeoutError("slow"), True, True, "timeout"),
        (RouteUnavailableError("open"), True, True, "circuit_open"),
        (upstream_stream_error(b'{"error": "gone"}'), True, True, "connection"),
    ],
)
def test_an_upstream_error_says_whether_to_fall_back_or_retry_and_its_kind(error, route_failure, retryable, kind):
    assert (error.route_failure, error.retryable, error.kind) == (route_failure, retryable, kind)


@pytest.mark.parametrize(
    "error", [ProxyError("x"), InvalidRequestError("x"), NotFoundError("x"), KnowledgeUnavailableError("x")]
)
def test_errors_of_the_caller_or_of_turnout_are_no_route_failure(error):
    assert not error.route_failure
    assert not error.retryable


def test_body_has_exactly_the_four_keys_all_present_even_when_null():
    body = decoded(ProxyError("boom").body())
    assert list(body) == ["error"]
    assert list(body["error"]) == ["message", "type", "param", "code"]
    assert body == {"error": {"message": "boom", "type": "api_error", "param": None, "code": None}}


def test_instance_param_code_status_and_headers_override_the_class():
    error = InvalidRequestError(
        "Bad temperature", param="temperature", code="invalid_value", status_code=422, headers={"x-a": "1"}
    )
    assert error.status == 422
    assert InvalidRequestError.status_code == 400
    assert error.headers == {"x-a": "1"}
    assert decoded(error.body()) == {
        "error": {
            "message": "Bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }


def test_error_body_function():
    assert decoded(error_body("m", "t", param="p", code="c")) == {
        "error": {"message": "m", "type": "t", "param": "p", "code": "c"}
    }
    assert decoded(error_body("m", "t")) == {"error": {"message": "m", "type": "t", "param": None, "code": None}}


def test_body_escapes_quotes_and_keeps_non_ascii():
    error = InvalidRequestError('The value "x" is wrong: café ☕')
    assert decoded(error.body())["error"]["message"] == 'The value "x" is wrong: café ☕'


# --- redaction --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KEY, "[redacted]"),
        (PROJECT_KEY, "[redacted]"),
        (
            f"Incorrect API key provided: {KEY}. You can find your key at ...",
            "Incorrect API key provided: [redacted]. You can find your key at ...",
        ),
        (
            "Incorrect API key provided: sk-abc12***************************wxyz.",
            "Incorrect API key provided: [redacted].",
        ),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Authorization: [redacted]"),
        ("bearer abcdefgh12345678", "[redacted]"),
        (f"keys {KEY} and {PROJECT_KEY}", "keys [redacted] and [redacted]"),
    ],
)
def test_redact_removes_keys(text, expected):
    result = redact(text)
    assert "sk-abc" not in result
    assert "sk-proj" not in result
    assert "eyJhbGciOiJIUzI1NiJ9" not in result
    assert "abcdefgh12345678" not in result
    assert result == expected


def test_redact_keeps_the_text_around_a_key():
    assert redact(f"Incorrect API key provided: {KEY}. You can find your API key at https://x.test.") == (
        "Incorrect API key provided: [redacted]. You can find your API key at https://x.test."
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "Invalid value for 'temperature': 3 is greater than the maximum of 2.",
        "The model `gpt-4o-mini` does not exist or you do not have access to it.",
        "A risk-averse, task-oriented ask-me-anything session.",
        "The bearer of bad news.",
        "key sk-abc is too short to be a key",
        "Rate limit reached for gpt-4 in organization org-123 on tokens per min (TPM).",
    ],
)
def test_redact_leaves_ordinary_text(text):
    assert redact(text) == text


@pytest.mark.parametrize("cls", [ProxyError, InvalidRequestError, UpstreamError, UpstreamRejectedError])
def test_a_key_in_the_message_never_reaches_message_or_body(cls):
    error = cls(f"Incorrect API key provided: {KEY} (also tried Bearer {PROJECT_KEY})")
    body = error.body()
    for secret in (KEY, PROJECT_KEY, "abc123def456"):
        assert secret not in error.message
        assert secret.encode() not in body
    assert error.message == "Incorrect API key provided: [redacted] (also tried [redacted])"
    assert decoded(body)["error"]["message"] == error.message


# --- upstream status mapping ------------------------------------------------------------------------


def openai_error(message: str, *, type_: str = "invalid_request_error", param: Any = None, code: Any = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


@pytest.mark.parametrize("status", [400, 422])
def test_rejected_request_keeps_status_message_param_and_code(status):
    body = openai_error(
        "Invalid value for 'temperature': 3 is greater than the maximum of 2.",
        param="temperature",
        code="invalid_value",
    )
    error = upstream_status_error(status, body)
    assert type(error) is UpstreamRejectedError
    assert error.status == status
    assert error.upstream_status == status
    assert error.message == "Invalid value for 'temperature': 3 is greater than the maximum of 2."
    assert error.param == "temperature"
    assert error.headers == {}
    assert decoded(error.body()) == {
        "error": {
            "message": "Invalid value for 'temperature': 3 is greater than the maximum of 2.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }


def test_rejected_request_with_an_integer_code_reports_it_as_a_string():
    error = upstream_status_error(400, openai_error("Bad", code=1234))
    assert error.instance_code == "1234"
    assert decoded(error.body())["error"]["code"] == "1234"


def test_rejected_request_message_is_still_redacted():
    error = upstream_status_error(400, openai_error(f"Your key {KEY} may not do this"))
    assert error.message == "Your key [redacted] may not do this"


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_becomes_502_without_echoing_the_upstream(status):
    body = openai_error(
        f"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com.",
        code="invalid_api_key",
    )
    error = upstream_status_error(status, body)
    assert type(error) is UpstreamError
    assert error.status == 502
    assert error.upstream_status == status
    assert error.message == f"The upstream refused Turnout's credentials (status {status}); check its API key."
    assert "Incorrect API key" not in error.message
    assert b"Incorrect API key" not in error.body()
    assert b"sk-abc" not in error.body()
    assert b"invalid_api_key" not in error.body()
    assert decoded(error.body()) == {
        "error": {"message": error.message, "type": "upstream_error", "param": None, "code": "upstream_error"}
    }


def test_not_found_becomes_502_without_echoing_the_upstream():
    body = openai_error("The model `ft:gpt-3.5-turbo:acme::secret` does not exist", code="model_not_found")
    error = upstream_status_error(404, body)
    assert type(error) is UpstreamError
    assert error.status == 502
    assert error.upstream_status == 404
    assert error.message == "The upstream does not know the requested model or endpoint (status 404)."
    assert b"ft:gpt-3.5-turbo" not in error.body()


def test_rate_limit_keeps_429_and_the_upstream_retry_after():
    body = openai_error(
        "Rate limit reached for gpt-4 on requests per min.", type_="requests", code="rate_limit_exceeded"
    )
    error = upstream_status_error(429, body, retry_after="20")
    assert type(error) is UpstreamRateLimitError
    assert error.status == 429
    assert error.upstream_status == 429
    assert error.headers == {"retry-after": "20"}
    assert decoded(error.body()) == {
        "error": {
            "message": "Rate limit reached for gpt-4 on requests per min.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


@pytest.mark.parametrize("retry_after", [None, ""])
def test_rate_limit_without_retry_after_defaults_to_one_second(retry_after):
    error = upstream_status_error(429, b'{"error": {"message": "slow down"}}', retry_after=retry_after)
    assert error.status == 429
    assert error.headers == {"retry-after": "1"}
    assert error.instance_code == "rate_limit_exceeded"
    assert error.message == "slow down"


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_become_502(status):
    error = upstream_status_error(status, openai_error("The server had an error", type_="server_error"))
    assert type(error) is UpstreamError
    assert error.status == 502
    assert error.upstream_status == status
    assert error.message == f"The upstream failed with status {status}: The server had an error"
    assert decoded(error.body())["error"]["type"] == "upstream_error"


def test_non_json_body_is_wrapped_in_the_502_message():
    error = upstream_status_error(502, b"<html><body>502 Bad Gateway</body></html>\n")
    assert error.status == 502
    assert error.upstream_status == 502
    assert error.message == "The upstream failed with status 502: <html><body>502 Bad Gateway</body></html>"


def test_non_json_body_is_cut_to_500_bytes():
    error = upstream_status_error(500, b"x" * 2000)
    assert error.message == "The upstream failed with status 500: " + "x" * 500


@pytest.mark.parametrize(
    ("status", "expected_status", "message"),
    [
        (503, 502, "The upstream failed with status 503: The upstream answered with status 503."),
        (400, 400, "The upstream answered with status 400."),
        (429, 429, "The upstream answered with status 429."),
    ],
)
def test_empty_body(status, expected_status, message):
    error = upstream_status_error(status, b"")
    assert error.status == expected_status
    assert error.upstream_status == status
    assert error.message == message


@pytest.mark.parametrize(
    ("status", "expected_status", "message"),
    [
        (400, 400, "a string"),
        (500, 502, "The upstream failed with status 500: a string"),
    ],
)
def test_error_given_as_a_string(status, expected_status, message):
    error = upstream_status_error(status, b'{"error": "a string"}')
    assert error.status == expected_status
    assert error.message == message
    assert error.param is None


def test_json_without_an_error_object_is_reported_as_text():
    error = upstream_status_error(500, b'{"detail": "overloaded"}')
    assert error.message == 'The upstream failed with status 500: {"detail": "overloaded"}'


# --- redaction by value ----------------------------------------------------------------------------------

HELD = "abc123XYZ-secret-0f1e2d3c"
"""A key of no known format: no pattern matches it, only its value."""


@pytest.mark.parametrize("status", [400, 422, 429, 500, 503])
def test_a_held_secret_echoed_in_message_param_and_code_is_removed_from_all(status):
    body = openai_error(f"bad key {HELD}", param=f"key={HELD}", code=HELD)
    error = upstream_status_error(status, body, retry_after=HELD, redactor=Redactor([HELD]))
    assert HELD not in error.message
    assert HELD.encode() not in error.body()
    assert HELD not in str(error.headers)
    assert "[redacted]" in error.message


def test_without_the_redactor_only_patterns_apply_param_and_code_included():
    error = upstream_status_error(400, openai_error("bad", param=f"x {KEY}", code=KEY))
    assert error.param == "x [redacted]"
    assert error.instance_code == "[redacted]"


def test_a_text_body_is_redacted_before_it_is_cut_so_no_first_characters_show():
    body = b"x" * 490 + HELD.encode() + b" and more"
    error = upstream_status_error(500, body, redactor=Redactor([HELD]))
    assert HELD[:4] not in error.message
    assert error.message == "The upstream failed with status 500: " + "x" * 490 + "[redacted]"


def test_a_mid_stream_error_event_is_redacted_by_value():
    event = f'{{"error": {{"message": "upstream exploded with {HELD}"}}}}'.encode()
    error = upstream_stream_error(event, redactor=Redactor([HELD]))
    assert error is not None
    assert error.message == "The upstream failed mid-stream: upstream exploded with [redacted]"
