"""`proxy.wire.redaction.Redactor`: secrets removed by value in every form they take, next to the key patterns."""

from __future__ import annotations

import json
import pickle
import re
import urllib.parse

import pytest

from proxy.wire.redaction import MIN_SECRET_LENGTH, PLACEHOLDER, Redactor, redact

PLAIN = "abc123XYZ-secret-0f1e2d3c4b5a"
SLASHED = 'abc/def+ghi=jkl%-secret-"quoted\\'


@pytest.mark.parametrize("secret", [PLAIN, SLASHED, "pässwörd-ünïcode-secret"])
@pytest.mark.parametrize(
    "written",
    [
        lambda s: s,
        lambda s: urllib.parse.quote(s, safe=""),
        lambda s: urllib.parse.quote_plus(s, safe=""),
        lambda s: urllib.parse.quote(s),
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
        lambda s: json.dumps(s)[1:-1].replace("/", "\\/"),
        lambda s: repr(s)[1:-1],
        lambda s: ascii(s)[1:-1],
    ],
)
def test_every_form_of_a_secret_is_removed_from_text_and_bytes(secret, written) -> None:
    form = written(secret)
    redactor = Redactor([secret])
    text = f"upstream said: {form} (twice: {form})."
    assert redactor.text(text) == f"upstream said: {PLACEHOLDER} (twice: {PLACEHOLDER})."
    assert redactor.data(text.encode()) == f"upstream said: {PLACEHOLDER} (twice: {PLACEHOLDER}).".encode()


def test_lower_case_percent_escapes_are_removed_too() -> None:
    escaped = re.sub(r"%[0-9A-F]{2}", lambda match: match.group(0).lower(), urllib.parse.quote(SLASHED, safe=""))
    assert escaped != urllib.parse.quote(SLASHED, safe="")
    assert Redactor([SLASHED]).text(escaped) == PLACEHOLDER


def test_text_applies_the_patterns_too_values_and_data_do_not() -> None:
    redactor = Redactor([PLAIN])
    text = f"{PLAIN} and sk-abcdefghijklmnop"
    assert redactor.text(text) == f"{PLACEHOLDER} and {PLACEHOLDER}"
    assert redactor.values(text) == f"{PLACEHOLDER} and sk-abcdefghijklmnop"  # an answer may show an example key
    assert redactor.data(text.encode()) == f"{PLACEHOLDER} and sk-abcdefghijklmnop".encode()


def test_ordinary_text_passes_unchanged() -> None:
    redactor = Redactor([PLAIN, SLASHED])
    for text in ("", "Hello there.", '{"id":"chatcmpl-1","choices":[]}', "abc123XYZ-secret"):
        assert redactor.text(text) == text
        assert redactor.data(text.encode()) == text.encode()


def test_a_longer_secret_holding_a_shorter_one_is_removed_whole() -> None:
    short, long = "abcdefgh-1234", "abcdefgh-1234-and-more"
    assert Redactor([short, long]).text(f"x {long} y {short}") == f"x {PLACEHOLDER} y {PLACEHOLDER}"


def test_values_shorter_than_the_minimum_are_not_removed_by_value() -> None:
    short = "o" * (MIN_SECRET_LENGTH - 1)
    redactor = Redactor([short, "", "ollama"])
    assert not redactor
    assert redactor.text(f"an {short} and ollama") == f"an {short} and ollama"


def test_the_patterns_alone_without_secrets() -> None:
    assert Redactor().text("key sk-abcdefghijklmnop") == redact("key sk-abcdefghijklmnop") == f"key {PLACEHOLDER}"


def test_union_equality_and_pickling() -> None:
    one, two = Redactor([PLAIN]), Redactor([SLASHED])
    both = one | two
    assert both.text(f"{PLAIN} {SLASHED}") == f"{PLACEHOLDER} {PLACEHOLDER}"
    assert both == Redactor([SLASHED, PLAIN])
    assert hash(both) == hash(Redactor([SLASHED, PLAIN]))
    assert pickle.loads(pickle.dumps(both)) == both  # noqa: S301 - sent to every `serve --workers N` worker
    assert PLAIN not in repr(both)
    assert SLASHED not in repr(both)


def test_a_secret_of_symbols_only_is_found_in_every_form_too() -> None:
    symbols = "/+=!/+=!/+="
    redactor = Redactor([symbols])
    for form in (symbols, urllib.parse.quote(symbols, safe=""), json.dumps(symbols)[1:-1].replace("/", "\\/")):
        assert redactor.text(f"<{form}>") == f"<{PLACEHOLDER}>"
