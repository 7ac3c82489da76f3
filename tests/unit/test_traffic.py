"""The traffic log's parts on their own (issue 16): redaction, reading a tally into an exchange, the queue, config.

The stores are in tests/contract/test_traffic_store.py; the whole log through the real server in
tests/e2e/test_traffic.py (and the overflow under load in tests/e2e/test_traffic_overflow.py).
"""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import PolicyError, load_policy
from proxy.accounting.tally import CAPTURED_UP_TO, Tally
from proxy.cli.main import main
from proxy.config.errors import ConfigError
from proxy.config.sections import RedactSettings, TrafficSettings
from proxy.config.settings import load_settings
from proxy.endpoints.chat import CHAT
from proxy.traffic import Exchange, open_traffic_store
from proxy.traffic.capture import Pending, exchange_of
from proxy.traffic.jsonl import JsonlTrafficStore
from proxy.traffic.log import TrafficLog, store_url
from proxy.traffic.postgres import PostgresTrafficStore
from proxy.traffic.redact import _NUMBERISH, _TWO_DIGITS, DEFAULT_PATTERNS, Redaction, _ascii_classes
from proxy.traffic.sqlite import SqliteTrafficStore
from proxy.wire.redaction import Redactor

DEFAULTS = Redaction(RedactSettings())


# --- redaction ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("write to jane.doe+tag@mail.example.co.uk today", "write to [email] today"),
        ("call +1 415-555-0132 or (020) 7946 0958 or +447911123456", "call [phone] or [phone] or [phone]"),
        ("card 4111 1111 1111 1111 or 5500-0000-0000-0004", "card [card] or [card]"),
        ("key sk-proj-abcdefghijklmnop1234 and Bearer abc.def-123456789", "key [key] and [key]"),
        ("tk-0123456789abcdefghij is Turnout's", "[key] is Turnout's"),
    ],
)
def test_the_default_patterns_replace_what_they_find(text: str, redacted: str) -> None:
    assert DEFAULTS.text(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "pi is 3.14159, the year 2026, 12 items, version 1.2.3",
        "order 4111111111111112 fails the Luhn check",  # a long number that is no card
        "an @ sign alone, or user@localhost",
    ],
)
def test_ordinary_text_is_left_as_it_is(text: str) -> None:
    assert DEFAULTS.text(text) == text


def test_configured_patterns_and_secrets_by_value_and_no_defaults() -> None:
    redaction = Redaction(
        RedactSettings(patterns=(r"ACME-\d+", "(?i)project x"), defaults=False), Redactor(["upstream-secret-1234"])
    )
    text = "ACME-42 on Project X by bob@example.com with upstream-secret-1234"
    assert redaction.text(text) == "[redacted] on [redacted] by bob@example.com with [redacted]"


def test_every_string_of_a_json_value_is_redacted_and_its_keys_kept() -> None:
    value = {"bob@example.com": [{"content": "mail bob@example.com"}, 3, None, True], "n": 1.5}
    assert DEFAULTS.value(value) == {"bob@example.com": [{"content": "mail [email]"}, 3, None, True], "n": 1.5}


TRICKY = [
    "line\nbob@example.com\n415-555-0132\nsk-proj-abcdefghijklmnop1234\tBearer\nabcdefgh12345",
    'quoted "bob@example.com" and \\4111 1111 1111 1111\\ and (020) 7946 0958.',
    "été: jane@example.org, +447911123456; номер 4111111111111111",
    "order 4411, created 1796409168, logprob -12.3456, ratio 0.25",
]


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_body_redacted_in_its_text_reads_as_each_string_redacted(text: str, ascii_only: bool) -> None:
    body = {"messages": [{"role": "user", "content": text}], "n": 1796409168, "t": -12.3456}
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    assert DEFAULTS.document(raw) == DEFAULTS.value(body)
    custom = Redaction(RedactSettings(patterns=(r'"[a-z]+"', "bob")))
    assert custom.document(raw) == custom.value(body)


FRAGMENTS = (
    "415-555-0132",
    "4111 1111 1111 1111",
    "+447911123456",
    "(020) 7946 0958",
    "jane@example.com",
    "sk-proj-abcdefghijklmnop1234",
    "Bearer abc.def-123456789",
    "1796409168",
    "-12.5",
    "_",
    "+",
    "-",
    "(",
    ".",
    " ",
    "\\",
    "\\n",
    "\n",
    '"',
    "@",
    "a",
    "Z",
    "7",
    "42",
)
ASCII_TEXT = st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(ASCII_TEXT)
def test_in_an_ascii_text_the_ascii_spelling_finds_what_each_pattern_finds(text: str) -> None:
    for pattern in [
        *(pattern for _, pattern in DEFAULT_PATTERNS),
        _NUMBERISH.unicode.pattern,
        _TWO_DIGITS.unicode.pattern,
    ]:
        ascii_spelt = re.compile(_ascii_classes(pattern))
        assert [m.span() for m in ascii_spelt.finditer(text)] == [m.span() for m in re.finditer(pattern, text)]


def test_configured_patterns_are_used_as_written_whatever_their_class_syntax() -> None:
    patterns = (r"id[\D]\d+", r"[]x]\w+")  # a \D inside a class, a class that starts with ]
    redaction = Redaction(RedactSettings(patterns=patterns, defaults=False))
    text = "id-42 and ]ab_1 and x9, not id42"
    assert redaction.text(text) == re.sub("|".join(patterns), "[redacted]", text)
    assert redaction.text(text) == "[redacted] and [redacted] and [redacted], not id42"


def test_a_body_that_is_not_json_has_no_document() -> None:
    assert DEFAULTS.document(b"not json") is None
    assert DEFAULTS.document(b'{"cut": "off') is None
    assert DEFAULTS.document(b"") is None


# --- a tally read into an exchange --------------------------------------------------------------------------


def _tally(**fields: Any) -> Tally:
    defaults: dict[str, Any] = {"request_id": "req-1", "started": 100.0, "ended_at": 100.5, "status": 200}
    return Tally(**{**defaults, **fields})


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4", **extra}
    chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


TOOL_STREAM = [
    _chunk({"role": "assistant", "content": None}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "look", "arguments": ""}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"q": "bob@example.com"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
    _chunk({}, "tool_calls"),
    b": x-turnout-cost-usd: 0.001\n\n",
    b"data: [DONE]\n\n",
]


def test_a_chat_stream_is_assembled_with_its_tool_calls_and_redacted() -> None:
    body = CHAT.decode(b'{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}')
    tally = _tally(routed=True, endpoint="chat", stream=True, request=body, sent=list(TOOL_STREAM), first_byte_at=100.1)
    exchange = exchange_of(Pending(tally, "/v1/chat/completions", 1_700_000_000.0, True), DEFAULTS)
    assert exchange.endpoint == "chat.completions"
    assert exchange.stream is True
    assert exchange.request == {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    assert exchange.answer is not None
    [choice] = exchange.answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call == {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": '{"q": "[email]"}'}}
    assert exchange.latency_ms == 500.0
    assert exchange.ttfb_ms == pytest.approx(100.0)


def test_a_stream_cut_short_keeps_what_came_and_says_why() -> None:
    error = b'data: {"error": {"message": "upstream broke off", "type": "api_error"}}\n\n'
    sent = [TOOL_STREAM[0], _chunk({"content": "Hello"}), _chunk({"content": " there"}), error, b"data: [DONE]\n\n"]
    tally = _tally(routed=True, endpoint="chat", stream=True, sent=sent)
    tally.failure = _failure()
    exchange = exchange_of(Pending(tally, "/v1/chat/completions", 1.0, True), DEFAULTS)
    assert exchange.answer is not None
    assert exchange.answer["choices"][0]["message"]["content"] == "Hello there"
    assert exchange.error == "upstream_error: upstream broke off"  # the failure, by its type


def _failure() -> Any:
    from proxy.wire.errors import UpstreamError

    return UpstreamError("upstream broke off")


def test_a_responses_stream_is_its_last_response_and_metadata_keeps_no_content() -> None:
    response = {"id": "resp_1", "object": "response", "status": "completed", "output": [], "usage": {"input_tokens": 3}}
    sent = [
        b'event: response.created\ndata: {"type": "response.created", "response": {"id": "resp_1"}}\n\n',
        b"event: response.completed\ndata: "
        + json.dumps({"type": "response.completed", "response": response}).encode()
        + b"\n\n",
    ]
    tally = _tally(routed=True, endpoint="responses", stream=True, sent=sent)
    assert exchange_of(Pending(tally, "/v1/responses", 1.0, True), DEFAULTS).answer == response
    quiet = exchange_of(Pending(tally, "/v1/responses", 1.0, False), DEFAULTS)
    assert quiet.answer is None
    assert quiet.request is None
    assert quiet.usage == {"input_tokens": 3}  # what the answer reported, content kept or not


def test_a_pass_through_is_read_from_what_came_and_went() -> None:
    tally = _tally(endpoint="files", route="passthrough", received=[b'{"purpose":', b' "batch"}'], sent=[b"not json"])
    exchange = exchange_of(Pending(tally, "/v1/files", 1.0, True), DEFAULTS)
    assert (exchange.endpoint, exchange.route) == ("/v1/files", "passthrough")
    assert exchange.request == {"purpose": "batch"}
    assert exchange.answer is None


def test_a_response_past_the_limit_is_not_kept() -> None:
    tally = _tally(sent=[])
    tally.keep_sent(b"x" * (CAPTURED_UP_TO - 1))
    tally.keep_sent(b"yy")
    assert tally.sent is None


# --- the queue ----------------------------------------------------------------------------------------------


def test_the_queue_drops_past_its_size_and_never_raises(tmp_path: Path) -> None:
    store = open_traffic_store(str(tmp_path / "t.jsonl"))
    log = TrafficLog(store, TrafficSettings(enabled=True, queue=3, batch=2))
    for index in range(5):
        log.record(_tally(request_id=f"r{index}", routed=True, endpoint="chat"), "POST", "/v1/chat/completions")
    log.record(_tally(request_id="probe"), "GET", "/healthz")
    log.record(_tally(request_id="own"), "POST", "/v1/turnout/feedback")
    assert log.depth == 3
    assert log._dropped == 2  # counted, then reported by the writer as turnout_traffic_dropped_total{reason="full"}


def test_the_rule_says_what_is_kept_else_the_default(tmp_path: Path) -> None:
    log = TrafficLog(open_traffic_store(str(tmp_path / "t.jsonl")), TrafficSettings(enabled=True, log="content"))
    now = time.perf_counter()
    for name, level in (("a", None), ("b", "metadata"), ("c", "content")):
        log.record(_tally(request_id=name, routed=True, endpoint="chat", log=level, started=now), "POST", "/v1/x")
    assert [p.content for p in log._pending] == [True, False, True]
    assert all(abs(p.at - time.time()) < 5 for p in log._pending)


# --- the configuration --------------------------------------------------------------------------------------


def test_a_rule_says_log_content_or_metadata() -> None:
    rules = [{"name": "a", "when": {"stream": True}, "route": "x", "log": "content"}, {"name": "b", "route": "x"}]
    engine = load_policy(rules, ["x"], locate=lambda where: "policy.yaml:1")
    assert engine.rules == ("a", "b")
    with pytest.raises(PolicyError, match=r"rule 'b': log must be one of: content, metadata; got 'all'"):
        load_policy([{"name": "b", "route": "x", "log": "all"}], ["x"], locate=lambda where: "policy.yaml:1")


POLICY = """\
upstreams:
  sim: {base_url: "http://127.0.0.1:1/v1", api_key: sk-unit}
routes:
  small: {upstream: sim, model: gpt-4o-mini}
traffic:
  enabled: true
  store: postgresql://turnout:pa55word@db.example/turnout
  log: content
  queue: 50
  redact: {patterns: [%s]}
  retention: {days: 30, max_rows: 1000}
rules:
  - {name: default, route: small, log: metadata}
"""


def test_the_traffic_block_is_read_and_its_password_is_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY % '"ACME-[0-9]+"', encoding="utf-8")
    settings = load_settings({"TURNOUT_CONFIG": str(path)})
    traffic = settings.deployment.traffic
    assert (traffic.enabled, traffic.log, traffic.queue, traffic.batch) == (True, "content", 50, 500)
    assert traffic.redact.patterns == ("ACME-[0-9]+",)
    assert traffic.retention.days == 30
    assert "pa55word" in settings.secrets()
    assert "pa55word" not in repr(traffic)
    assert store_url(traffic, None) == traffic.store
    assert store_url(TrafficSettings(), "sqlite:///keys.db") == "sqlite:///keys.db"


def test_a_bad_pattern_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY % '"ACME-[0-9"', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"policy.yaml:10: traffic.redact.patterns: 'ACME-\[0-9' is not a regular"):
        load_settings({"TURNOUT_CONFIG": str(path)})


def test_store_urls() -> None:
    assert isinstance(open_traffic_store("sqlite:////var/t.db"), SqliteTrafficStore)
    assert isinstance(open_traffic_store("postgresql://u@h/db?schema=s"), PostgresTrafficStore)
    file = open_traffic_store("logs/t.jsonl")
    assert isinstance(file, JsonlTrafficStore)
    assert file.path == Path("logs/t.jsonl")
    directory = open_traffic_store("jsonl:////var/log/turnout")  # absolute; jsonl:///logs is relative, as SQLite's
    assert isinstance(directory, JsonlTrafficStore)
    assert directory.path == Path("/var/log/turnout/traffic.jsonl")
    assert directory.feedback_path == Path("/var/log/turnout/feedback.jsonl")
    for bad in ("mysql://h/db", "sqlite://t.db", "traffic.txt", "jsonl://"):
        with pytest.raises(ValueError, match="traffic"):
            open_traffic_store(bad)


def test_an_exchange_round_trips_through_its_row() -> None:
    exchange = Exchange(
        request_id="r", at=1.5, endpoint="embeddings", stream=False, caller=None, team=None, route="x", rule="m",
        reason=None, model=None, fallbacks=("a", "b"), status=200, error=None, cache="hit", usage={"prompt_tokens": 1},
        cost=Decimal("0.1"), baseline=Decimal("0.3"), savings=Decimal("0.2"), latency_ms=1.0, ttfb_ms=None,
        request={"input": "x"}, answer=None, score=1.0,
    )  # fmt: skip
    row = msgspec.json.decode(msgspec.json.encode(exchange.to_row()))
    assert Exchange.from_row(row) == exchange
    assert exchange.without_content().request is None


def test_the_cli_refuses_feedback_without_anything_to_attach(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["feedback", "req-1", "--store", "x.jsonl"]) == 2
    assert "at least one of --score, --label, --comment" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["feedback", "req-1", "--score", "lots"])
    assert exited.value.code == 2
