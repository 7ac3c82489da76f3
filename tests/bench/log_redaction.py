"""What redaction by value costs on the hot path: `python -m tests.bench.log_redaction`.

Times, per call, the log formatter on an access-log line (before: patterns only, as the formatter was
before issue 11; after: with the settings' secrets), and `Redactor.data` on what an upstream sends
back (one stream read of a few events, a completion body). The secrets are those of a deployment: an
upstream key of letters and digits, one with `/`, `+` and `=` (more forms to look for), a Redis password.
Never part of the test suite: it prints figures, it asserts nothing about them.
"""

from __future__ import annotations

import functools
import json
import logging
import timeit
from collections.abc import Callable

from proxy.logs import RedactingFormatter
from proxy.wire.redaction import Redactor, redact

SECRETS = ["abc123XYZ-secret-0f1e2d3c4b5a69788796", "Zx9/q+Lm2=Wp7-secret-8f7e6d5c", "redis-pw/9f8e7d6c5b4a"]
ACCESS_LINE = json.dumps(
    {
        "ts": "2026-12-03T10:00:00.123Z",
        "request_id": "e2e-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
        "caller": "support-bot",
        "route": "support-ft",
        "rule": "default",
        "fallback_from": None,
        "model": "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "stream": False,
        "cache": "miss",
        "prompt_tokens": 412,
        "completion_tokens": 96,
        "cost_usd": "0.00642",
        "baseline_cost_usd": "0.01812",
        "savings_usd": "0.0117",
        "duration_ms": 412.3,
        "upstream_ms": 409.8,
        "ttft_ms": None,
        "retries": 0,
        "upstream_errors": [],
        "messages": None,
        "answer": None,
    },
    separators=(",", ":"),
)
EVENT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini",'
    b'"choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}\n\n'
)


class PatternsOnlyFormatter(logging.Formatter):
    """The formatter as it was before redaction by value."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def per_call(function: Callable[[], object], number: int = 20_000) -> float:
    """Microseconds per call, the best of five runs."""
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main() -> None:
    record = logging.LogRecord("turnout.access", logging.INFO, "", 0, ACCESS_LINE, (), None)
    formatters = {
        "before (patterns only)": PatternsOnlyFormatter("%(message)s"),
        "after, no secret held": RedactingFormatter("%(message)s"),
        "after, 3 secrets held": RedactingFormatter("%(message)s", redactor=Redactor(SECRETS)),
    }
    print(f"access-log line ({len(ACCESS_LINE)} characters), formatter per line:")
    for name, formatter in formatters.items():
        assert formatter.format(record) == ACCESS_LINE
        print(f"  {name:26} {per_call(functools.partial(formatter.format, record)):6.2f} µs")
    redactor = Redactor(SECRETS)
    read, body = EVENT * 4, EVENT * 40
    print("Redactor.data with 3 secrets held:")
    print(f"  stream read ({len(read)} B)         {per_call(lambda: redactor.data(read)):6.2f} µs")
    print(f"  body ({len(body)} B)              {per_call(lambda: redactor.data(body)):6.2f} µs")


if __name__ == "__main__":
    main()
