"""`proxy.headers`: which of a caller's headers are forwarded upstream, and the `x-request-id` Turnout sets."""

from __future__ import annotations

import pytest

from proxy.headers import forwardable_headers

REQUEST_ID = "req_0123456789abcdef000000000001"

DROPPED = [
    (b"authorization", b"Bearer sk-caller-0123456789abcdef"),
    (b"api-key", b"azure-key-0123456789"),
    (b"x-api-key", b"anthropic-key-0123456789"),
    (b"cookie", b"session=abc"),
    (b"openai-organization", b"org-123"),
    (b"openai-project", b"proj_123"),
    (b"host", b"turnout.internal:8000"),
    (b"content-length", b"123"),
    (b"content-type", b"application/json"),
    (b"accept-encoding", b"gzip, br"),
    (b"connection", b"keep-alive"),
    (b"keep-alive", b"timeout=5"),
    (b"proxy-authenticate", b"Basic"),
    (b"proxy-authorization", b"Basic dXNlcjpwYXNz"),
    (b"proxy-connection", b"keep-alive"),
    (b"te", b"trailers"),
    (b"trailer", b"x-checksum"),
    (b"transfer-encoding", b"chunked"),
    (b"upgrade", b"h2c"),
]


@pytest.mark.parametrize(("name", "value"), DROPPED)
def test_header_is_dropped(name, value):
    headers = forwardable_headers([(name, value), (b"user-agent", b"OpenAI/Python 1.0")], REQUEST_ID)
    assert headers == {"user-agent": "OpenAI/Python 1.0", "x-request-id": REQUEST_ID}


def test_all_dropped_at_once_leaves_only_the_request_id():
    assert forwardable_headers(DROPPED, REQUEST_ID) == {"x-request-id": REQUEST_ID}


def test_headers_named_by_connection_are_dropped():
    raw = [
        (b"x-foo", b"1"),
        (b"connection", b"X-Foo , x-bar"),
        (b"x-bar", b"2"),
        (b"x-baz", b"3"),
    ]
    assert forwardable_headers(raw, REQUEST_ID) == {"x-baz": "3", "x-request-id": REQUEST_ID}


def test_end_to_end_headers_are_kept():
    raw = [
        (b"user-agent", b"OpenAI/Python 1.54.0"),
        (b"x-custom", b"value with spaces"),
        (b"accept", b"application/json"),
        (b"x-stainless-retry-count", b"0"),
        (b"x-latin1", "café".encode("latin-1")),
    ]
    assert forwardable_headers(raw, REQUEST_ID) == {
        "user-agent": "OpenAI/Python 1.54.0",
        "x-custom": "value with spaces",
        "accept": "application/json",
        "x-stainless-retry-count": "0",
        "x-latin1": "café",
        "x-request-id": REQUEST_ID,
    }


def test_the_request_id_is_set_without_a_client_one():
    assert forwardable_headers([], REQUEST_ID) == {"x-request-id": REQUEST_ID}


def test_a_client_request_id_is_replaced():
    raw = [(b"x-request-id", b"client-chosen-id"), (b"x-custom", b"1")]
    assert forwardable_headers(raw, REQUEST_ID) == {"x-custom": "1", "x-request-id": REQUEST_ID}
