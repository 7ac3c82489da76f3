"""The last-resort handler: a bug in Turnout still answers OpenAI JSON, logs the traceback, leaks nothing."""

from __future__ import annotations

import logging

import msgspec
import pytest
from litestar import Request
from litestar.datastructures import State

from proxy.api import handle_unexpected_error
from proxy.logs import LOG_FORMAT, RedactingFormatter


def test_an_unexpected_error_is_a_plain_500(caplog: pytest.LogCaptureFixture) -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "headers": [],
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "root_path": "",
    }
    request: Request[object, object, State] = Request(scope)  # type: ignore[arg-type]  # a minimal HTTP scope
    with caplog.at_level(logging.ERROR, logger="turnout.api"):
        response = handle_unexpected_error(request, RuntimeError("bug while holding sk-proj-abcdefghijklmnop"))
    assert response.status_code == 500
    assert msgspec.json.decode(response.content) == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "api_error",
            "param": None,
            "code": None,
        }
    }
    [record] = caplog.records
    line = RedactingFormatter(LOG_FORMAT).format(record)  # what `turnout serve` writes
    assert "unexpected error on POST /v1/chat/completions" in line
    assert "RuntimeError: bug while holding [redacted]" in line
    assert "sk-proj" not in line
