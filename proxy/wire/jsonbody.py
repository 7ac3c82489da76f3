"""A request body decoded once as plain JSON values, with the checks every body gets: UTF-8, numbers, nesting.

msgspec skips what a typed decode does not keep without checking its strings' UTF-8 or its numbers'
range, and recurses as deep as the body nests, until Python's stack runs out (at a depth that depends
on the caller's). So a body could pass one decode and fail the next. `decode_json_object()` decodes
the whole body once and refuses, with a 400 that names the top-level member at fault:

- anything that is not JSON, or not UTF-8 (`invalid_utf8`);
- a number a 64-bit float cannot hold, or an integer of more than `sys.get_int_max_str_digits()`
  digits (`number_out_of_range`);
- arrays and objects nested more than `MAX_DEPTH` levels (`nested_too_deeply`), checked without
  recursion, far below the stack's limit: every later reader of an accepted body (a rewrite, the
  cache key, the RAG route, the upstream) reads it too.

The checks cost in proportion to the body, with small constants even for a hostile one (millions of
tiny arrays): the decode runs with the garbage collector paused, and the nesting of a large body is
measured on its brackets in C (`_brackets_deeper`) rather than walked in Python.

`read_json()` applies the same checks to JSON from elsewhere (an upstream's answer, a stored cache
entry), raising `UnreadableJSONError` with the reason rather than a client's 400.
"""

from __future__ import annotations

import contextlib
import gc
import re
import sys
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np

from proxy.wire.errors import InvalidRequestError

__all__ = ["MAX_DEPTH", "NOT_JSON", "UnreadableJSONError", "decode_json_object", "read_json"]

MAX_DEPTH = 128
"""The deepest a request body may nest arrays and objects (the body itself is level 1).

Far beyond any real request (a JSON schema of ten nested objects is ~25 levels), and far below Python's
recursion limit, so that no later reader of an accepted body ever runs out of stack."""

NOT_JSON = (
    "We could not parse the JSON body of your request: it is not valid JSON ({reason}). "
    "Send a JSON object as described in the OpenAI API reference."
)
"""OpenAI's answer to a body that is not JSON, with msgspec's reason."""

_JSON = msgspec.json.Decoder()
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_AT_PATH = re.compile(r" - at `\$[^`]*`$")
_CONTAINERS = frozenset({dict, list})
_WALKED = 16_384
"""Up to this many values a body's levels are walked in Python (cheaper for the usual body); beyond, its
brackets are counted in C (cheaper for a hostile one: a walk costs ~0.3 µs a nested array)."""
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_CHUNK = 1 << 20


def _reason(error: msgspec.DecodeError) -> str:
    return _AT_PATH.sub("", str(error))


def _too_deep(name: str | None) -> InvalidRequestError:
    where = f"'{name}'" if name is not None else "it"
    message = f"Invalid request body: {where} nests arrays and objects more than {MAX_DEPTH} levels deep."
    return InvalidRequestError(message, param=name, code="nested_too_deeply")


def _member_at_fault(fields: Mapping[str, msgspec.Raw], error: msgspec.DecodeError) -> InvalidRequestError:
    for name, value in fields.items():
        try:
            _JSON.decode(value)
        except msgspec.ValidationError as exc:  # the only ones plain JSON values can fail: numbers
            integer = "Integer" in str(exc)
            what = f"an integer of more than {sys.get_int_max_str_digits()} digits" if integer else "a number"
            where = "" if integer else " (a JSON number must fit in a 64-bit float)"
            message = f"Invalid request body: '{name}' holds {what}, which is out of range{where}."
            return InvalidRequestError(message, param=name, code="number_out_of_range")
        except msgspec.DecodeError as exc:
            if "UTF-8" not in str(exc):
                return InvalidRequestError(NOT_JSON.format(reason=_reason(exc)), param=name)
            message = f"Invalid request body: '{name}' holds a string that is not valid UTF-8."
            return InvalidRequestError(message, param=name, code="invalid_utf8")
    return InvalidRequestError(NOT_JSON.format(reason=_reason(error)))


def _unreadable(raw: bytes, error: msgspec.DecodeError) -> InvalidRequestError:
    """The error for a body the decoder refused: which member, and why, when its syntax is sound.

    Split by skipping (which checks the syntax only), then decoded member by member, it shows the
    member at fault.
    """
    try:
        return _member_at_fault(_FIELDS.decode(raw), error)
    except msgspec.DecodeError:
        return InvalidRequestError(NOT_JSON.format(reason=_reason(error)))
    except RecursionError:  # a body with two faults: this one is as good a reason as the other
        return _too_deep(None)


def _walk_deeper(value: Any, limit: int) -> bool | None:
    """Whether decoded `value` nests more than `limit` levels; None once it holds more than `_WALKED` values.

    Level by level, without recursion (the point is not to need the stack).
    """
    level = [value] if type(value) in _CONTAINERS else []
    walked = 0
    for _ in range(limit):
        if not level:
            return False
        walked += len(level) + sum(map(len, level))
        if walked > _WALKED:
            return None
        found = []
        for node in level:
            for member in node.values() if type(node) is dict else node:
                if type(member) in _CONTAINERS:
                    found.append(member)
        level = found
    return bool(level)


def _brackets_deeper(raw: bytes, limit: int) -> bool:
    """Whether valid JSON `raw` nests more than `limit` levels: its brackets outside strings, summed in C."""
    if b"\\" in raw:  # drop escaped backslashes, then escaped quotes: each quote left opens or closes a string
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(raw.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    if len(brackets) <= 2 * limit:  # balanced: at most one level per pair
        return False
    steps = (np.frombuffer(brackets, dtype=np.uint8) & 2).astype(np.int8) - 1  # [ { have bit 1: +1; ] }: -1
    depth = 0
    for start in range(0, len(steps), _CHUNK):  # in chunks: a 16 MB body needs no 64 MB of running sums
        running = np.cumsum(steps[start : start + _CHUNK], dtype=np.int32) + depth
        if int(running.max()) > limit:
            return True
        depth = int(running[-1])
    return False


def _deeper(raw: bytes, body: Any) -> bool:
    if len(raw) <= 4096 and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:  # cheaper than either measure
        return False
    walked = _walk_deeper(body, MAX_DEPTH)
    return _brackets_deeper(raw, MAX_DEPTH) if walked is None else walked


_SMALL = 4096
"""Below this many bytes, a JSON body is decoded without pausing the collector (`_decode`)."""


def _decode(raw: bytes) -> Any:
    """`raw` decoded with the garbage collector paused.

    The decode allocates every array and object of the body, and the collections it would trigger (most
    of the time spent on a body of a million small arrays) can free none of them. msgspec holds the GIL
    throughout, so no other thread allocates while the collector waits. A small body (a stream's chunk, read for
    every event) is decoded as it is: the most it can allocate (about 1,400 containers) costs one young collection,
    less than pausing the collector for every chunk costs.
    """
    if len(raw) < _SMALL:
        return _JSON.decode(raw)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _JSON.decode(raw)
    finally:
        if was_enabled:
            gc.enable()


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object, as plain values, with the checks every body gets.

    Raises:
        InvalidRequestError: the body is not JSON (or not UTF-8), not an object, holds a number out of
            range, or nests more than `MAX_DEPTH` levels; `param` names the top-level member at fault
            (for nesting deeper than the stack, it cannot be told).
    """
    try:
        body = _decode(raw)
    except RecursionError:  # deeper than Python's stack, let alone MAX_DEPTH
        raise _too_deep(None) from None
    except msgspec.DecodeError as exc:
        raise _unreadable(raw, exc) from exc
    if not isinstance(body, dict):
        kind = {list: "array", str: "str", bool: "bool", int: "int", float: "float"}.get(type(body), "null")
        raise InvalidRequestError(f"Invalid request body: Expected `object`, got `{kind}`.")
    if _deeper(raw, body):
        name = None
        with contextlib.suppress(RecursionError):  # the decode above went as deep, but from a frame higher
            members = _FIELDS.decode(raw).items()
            name = next((name for name, value in members if _brackets_deeper(bytes(value), MAX_DEPTH - 1)), None)
        raise _too_deep(name)
    return body


class UnreadableJSONError(ValueError):
    """JSON that a later reader could not read: not JSON or not UTF-8, a number out of range, nested too deeply."""


def read_json(raw: bytes) -> Any:
    """Decode JSON that did not come from the caller (an upstream's answer, a cache entry), with the same checks.

    Raises:
        UnreadableJSONError: `raw` is not JSON (or not UTF-8), holds a number out of range, or nests more than
            `MAX_DEPTH` levels; its message says which, and quotes nothing of `raw`.
    """
    try:
        value = _decode(raw)
    except RecursionError:
        raise UnreadableJSONError(f"it nests arrays and objects more than {MAX_DEPTH} levels deep") from None
    except msgspec.DecodeError as exc:
        reason = _reason(exc)
        raise UnreadableJSONError(reason[:1].lower() + reason[1:]) from None
    if _deeper(raw, value):
        raise UnreadableJSONError(f"it nests arrays and objects more than {MAX_DEPTH} levels deep")
    return value
