"""`proxy.wire.sse`: the incremental SSE decoder (any split, CRLF, multi-line data, ignored fields) and encoders."""

from __future__ import annotations

import pytest

from proxy.wire.sse import DONE, DONE_EVENT, encode_event, find_done
from tests.sse_client import SSEDecoder

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b"event: message\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b'data: {"id":"c1","choices":[{"delta":{"content":"lo \xc3\xa9\xf0\x9f\x9a\x80"}}]}\n\n'
    b"data: first line\n"
    b"data:second line\n"
    b": a comment in the middle\n"
    b"data:  two spaces\n\n"
    b"event: ping\n\n"
    b"data: [DONE]\n\n"
)
PAYLOADS = [
    b'{"id":"c1","choices":[{"delta":{"content":"Hel"}}]}',
    b'{"id":"c1","choices":[{"delta":{"content":"lo \xc3\xa9\xf0\x9f\x9a\x80"}}]}',
    b"first line\nsecond line\n two spaces",
    DONE,
]


def feed_all(decoder: SSEDecoder, chunks: list[bytes]) -> list[bytes]:
    payloads: list[bytes] = []
    for chunk in chunks:
        payloads.extend(decoder.feed(chunk))
    return payloads


def is_pending(decoder: SSEDecoder) -> bool:
    # A call, so that mypy does not narrow the property across feeds.
    return decoder.pending


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_whole_stream_at_once():
    decoder = SSEDecoder()
    assert decoder.feed(STREAM) == PAYLOADS
    assert is_pending(decoder) is False


def test_one_byte_at_a_time_gives_the_same_payloads():
    decoder = SSEDecoder()
    assert feed_all(decoder, one_byte_at_a_time(STREAM)) == PAYLOADS
    assert is_pending(decoder) is False


def test_every_two_part_split_gives_the_same_payloads():
    for split in range(1, len(STREAM)):
        decoder = SSEDecoder()
        assert feed_all(decoder, [STREAM[:split], STREAM[split:]]) == PAYLOADS, f"split at byte {split}"


def test_crlf_line_endings():
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert SSEDecoder().feed(crlf) == PAYLOADS


def test_crlf_one_byte_at_a_time():
    crlf = STREAM.replace(b"\n", b"\r\n")
    decoder = SSEDecoder()
    assert feed_all(decoder, one_byte_at_a_time(crlf)) == PAYLOADS
    assert is_pending(decoder) is False


def test_crlf_split_between_cr_and_lf():
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"a":1}\r') == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b'\ndata: {"b":2}\r\n\r\n') == [b'{"a":1}', b'{"b":2}']
    assert is_pending(decoder) is False


def test_multi_line_data_is_joined_with_newlines():
    assert SSEDecoder().feed(b"data: a\ndata: b\ndata: c\n\n") == [b"a\nb\nc"]


def test_data_without_a_space_after_the_colon():
    assert SSEDecoder().feed(b'data:{"x":1}\n\n') == [b'{"x":1}']


def test_only_one_leading_space_is_dropped():
    assert SSEDecoder().feed(b"data:  x \n\n") == [b" x "]


def test_empty_data_line():
    assert SSEDecoder().feed(b"data:\n\n") == [b""]


def test_comments_and_other_fields_are_ignored():
    stream = b": keep-alive\nevent: completion\nid: 42\nretry: 3000\ndata: payload\n: trailing\n\n"
    assert SSEDecoder().feed(stream) == [b"payload"]


@pytest.mark.parametrize(
    "event",
    [b": keep-alive\n\n", b"event: ping\n\n", b"id: 1\nretry: 10\n\n", b"\n\n"],
)
def test_an_event_without_data_yields_nothing(event):
    decoder = SSEDecoder()
    assert decoder.feed(event) == []
    assert is_pending(decoder) is False


def test_pending_for_a_half_event():
    decoder = SSEDecoder()
    assert is_pending(decoder) is False
    assert decoder.feed(b'data: {"choices": [') == []
    assert is_pending(decoder) is True
    assert decoder.feed(b"]}\n") == []
    assert is_pending(decoder) is True
    assert decoder.feed(b"\n") == [b'{"choices": []}']
    assert is_pending(decoder) is False


def test_pending_after_one_complete_and_one_half_event():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: one\n\ndata: tw") == [b"one"]
    assert is_pending(decoder) is True


def test_encode_event():
    assert encode_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert encode_event(b"") == b"data: \n\n"
    assert DONE_EVENT == b"data: [DONE]\n\n"
    assert encode_event(DONE) == DONE_EVENT


def test_encoded_events_decode_back():
    payloads = [b'{"a":1}', b'{"b":"\xc3\xa9"}', DONE]
    stream = b"".join(encode_event(payload) for payload in payloads)
    assert SSEDecoder().feed(stream) == payloads


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        (b"data: [DONE]\n\n", 0),
        (b"data:[DONE]\n\n", 0),
        (b'data: {"a":1}\n\ndata: [DONE]\n\n', 15),
        (b'data: {"content":"[DONE]"}\n\n', -1),
        (b'data: {"content":"[DONE]"}\n\ndata: [DONE]\n\n', 28),
        (b"data: [DONE] later\n\n", -1),
        (b"data: [DONE]", 0),
        (b"", -1),
    ],
)
def test_find_done_finds_only_the_done_event(events: bytes, expected: int) -> None:
    assert find_done(events) == expected
