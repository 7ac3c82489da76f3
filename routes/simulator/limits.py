"""What the simulated upstream accepts: OpenAI's checks, and bounds on everything a request makes it allocate.

The simulator answers in tests, demos and `turnout serve` without a key (in Turnout's own process), so
nothing a client sends may make it allocate without bound or fail with a 500. It reads a chat body with
the same checks as Turnout (`proxy.wire.schemas.decode_chat_body`: JSON, UTF-8, numbers, nesting, OpenAI's
bounds on `n`, `temperature`, ...), and then bounds what only it uses:

| what | bound |
|---|---|
| request body | `MAX_BODY_BYTES` (answered 413) |
| `messages` | `MAX_MESSAGES` |
| `x-simulated-chunks` | `MAX_CHUNKS`, and `n` x chunks at most `MAX_CHOICE_CHUNKS` |
| `x-simulated-latency-ms`, `x-simulated-chunk-interval-ms` | 0 to `MAX_WAIT_MS` |
| `x-simulated-fault` | a status of 400-599 (or `text-` one), `timeout`, `midstream`, `disconnect` |
| `tools` | at most `MAX_TOOLS`; each `function` an object with a string `name` and JSON-schema `parameters` |
| a schema (`parameters`, `response_format.json_schema.schema`) | walked to a bounded depth and size (`schema_values`) |
| embeddings `input` | at most `MAX_EMBEDDING_INPUTS` strings or token arrays |
| embeddings `dimensions` | 1 to `MAX_DIMENSIONS`, and inputs x dimensions at most `MAX_EMBEDDING_VALUES` |
| a call's record | its raw body kept up to `RECORD_BYTES` |

Whatever is out of bounds is a `SimulatorRejectedError`, which the handlers answer as an OpenAI-format error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from proxy.wire.errors import InvalidRequestError
from proxy.wire.jsonbody import decode_json_object
from proxy.wire.schemas import ChatBody, decode_chat_body
from routes.simulator.embeddings import ENCODINGS, input_texts

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CHOICE_CHUNKS",
    "MAX_CHUNKS",
    "MAX_DIMENSIONS",
    "MAX_EMBEDDING_INPUTS",
    "MAX_EMBEDDING_VALUES",
    "MAX_MESSAGES",
    "MAX_TOOLS",
    "MAX_WAIT_MS",
    "RECORD_BYTES",
    "EmbeddingsAsk",
    "SimulatorRejectedError",
    "chat_body",
    "chunk_count",
    "differs",
    "embeddings_ask",
    "fault_of",
    "reply_of",
    "reported_usage",
    "wait_ms",
]

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Twice Turnout's default `max_body_bytes`: whatever Turnout forwards, the simulator reads."""
MAX_MESSAGES = 10_000
MAX_TOOLS = 128
"""OpenAI's own limit on `tools`."""
MAX_CHUNKS = 4_096
MAX_CHOICE_CHUNKS = 65_536
"""Content chunks times choices (`n`): about 10 MB of stream at most."""
MAX_WAIT_MS = 600_000.0
MAX_EMBEDDING_INPUTS = 2_048
"""OpenAI's own limit on `input` (`CreateEmbeddingRequest`)."""
MAX_DIMENSIONS = 3_072
"""The largest OpenAI embedding model's (`text-embedding-3-large`)."""
MAX_EMBEDDING_VALUES = 512 * 3_072
"""Floats in one answer: a batch of Turnout's embedder (512 texts) at the largest dimension."""
RECORD_BYTES = 64 * 1024
_FAULTS = frozenset({"", "timeout", "midstream", "disconnect"})


class SimulatorRejectedError(Exception):
    """A request the simulator refuses, with the OpenAI error it answers."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    @classmethod
    def of(cls, error: InvalidRequestError) -> SimulatorRejectedError:
        """The rejection that says what `error` (Turnout's own check) says."""
        return cls(error.message, status=error.status, param=error.param, code=error.instance_code)


class _Parameters(msgspec.Struct):
    properties: dict[str, dict[str, object]] | None = None
    required: list[str] | None = None


class _Function(msgspec.Struct):
    name: str = "f"
    parameters: _Parameters | None = None


class _Tool(msgspec.Struct):
    function: _Function | None = None


def _too_many(param: str, limit: int, count: int) -> SimulatorRejectedError:
    message = (
        f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
        f"but got an array with length {count} instead."
    )
    return SimulatorRejectedError(message, param=param, code="array_above_max_length")


def chat_body(raw: bytes) -> tuple[ChatBody, dict[str, Any]]:
    """A chat request checked as Turnout checks it, bounded, with its plain JSON values (for the answer).

    Raises:
        SimulatorRejectedError: the body is not a valid chat request, or asks for more than the bounds allow.
    """
    try:
        body = decode_chat_body(raw)
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    if len(body.view.messages) > MAX_MESSAGES:
        raise _too_many("messages", MAX_MESSAGES, len(body.view.messages))
    values: dict[str, Any] = msgspec.json.decode(raw)  # an accepted body always decodes again
    tools = values.get("tools")
    if isinstance(tools, list) and len(tools) > MAX_TOOLS:
        raise _too_many("tools", MAX_TOOLS, len(tools))
    if tools:  # the answer may call any tool's function: its name and parameters must be usable
        try:
            msgspec.convert(tools, list[_Tool])
        except msgspec.ValidationError as exc:
            message = f"Invalid 'tools': {str(exc).replace('$', 'tools')}."
            raise SimulatorRejectedError(message, param="tools", code="invalid_value") from exc
    return body, values


def _header(headers: Mapping[str, str], name: str, default: float, high: float) -> float:
    value = headers.get(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number <= high:  # NaN fails this too
        raise SimulatorRejectedError(f"Invalid '{name}': expected a number from 0 to {high:g}, got {value[:40]!r}.")
    return number


def wait_ms(headers: Mapping[str, str], name: str, default: float) -> float:
    """A wait header (`x-simulated-latency-ms`, `x-simulated-chunk-interval-ms`) in ms, or `default`."""
    return _header(headers, name, default, MAX_WAIT_MS)


def chunk_count(headers: Mapping[str, str], default: int, choices: int) -> int:
    """`x-simulated-chunks` (or `default`), within `MAX_CHUNKS` and `MAX_CHOICE_CHUNKS` for `choices` choices."""
    chunks = int(_header(headers, "x-simulated-chunks", default, MAX_CHUNKS))
    if chunks * choices > MAX_CHOICE_CHUNKS:
        message = (
            f"The simulator streams at most {MAX_CHOICE_CHUNKS} chunks over all choices: "
            f"{chunks} chunks x n={choices} is too many."
        )
        raise SimulatorRejectedError(message, param="n")
    return chunks


def reported_usage(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """`x-simulated-usage`: the usage object to report instead of the simulator's own count (None: none given).

    Any JSON object, reported as given (chat's, the Responses API's or an embedding's shape, details and all), so
    that a test can make the simulator bill exactly what a recorded OpenAI answer billed.

    Raises:
        SimulatorRejectedError: the header is not a JSON object.
    """
    text = headers.get("x-simulated-usage")
    if text is None:
        return None
    try:
        usage = msgspec.json.decode(text)
    except msgspec.DecodeError:
        usage = None
    if not isinstance(usage, dict):
        raise SimulatorRejectedError(f"Invalid 'x-simulated-usage': expected a JSON object, got {text[:40]!r}.")
    return usage


def fault_of(headers: Mapping[str, str], model: object) -> str:
    """The `x-simulated-fault` that applies to a request for `model` ("" for none).

    Raises:
        SimulatorRejectedError: the header names no fault the simulator knows.
    """
    fault = headers.get("x-simulated-fault", "")
    status = fault.removeprefix("text-")
    if fault not in _FAULTS and not (status.isdigit() and len(status) == 3 and 400 <= int(status) <= 599):
        raise SimulatorRejectedError(
            f"Unknown x-simulated-fault {fault[:40]!r}: a status of 400-599, or a fault's name."
        )
    only_for = headers.get("x-simulated-fault-for")
    return "" if only_for is not None and only_for != model else fault


@dataclass(frozen=True, slots=True)
class EmbeddingsAsk:
    """What an embeddings request asks for, checked and bounded."""

    texts: list[str]
    dimension: int
    model: object
    encoding: str
    """`float` or `base64`."""
    values: dict[str, Any]
    """The body's plain JSON values (for the call's record)."""


def embeddings_ask(raw: bytes) -> EmbeddingsAsk:
    """An embeddings request: strings or token arrays, at most `MAX_EMBEDDING_INPUTS`, a bounded answer size.

    Raises:
        SimulatorRejectedError: the body is not JSON, its input is not strings or tokens, or it asks for too
            large an answer.
    """
    try:
        values = decode_json_object(raw)
    except InvalidRequestError as exc:
        raise SimulatorRejectedError.of(exc) from exc
    texts = input_texts(values.get("input"))
    if texts is None:
        message = "Invalid 'input': expected a string, an array of strings, a token array or an array of them."
        raise SimulatorRejectedError(message, param="input")
    encoding = values.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        message = f"Invalid 'encoding_format': expected 'float' or 'base64', got {str(encoding)[:40]!r}."
        raise SimulatorRejectedError(message, param="encoding_format")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise _too_many("input", MAX_EMBEDDING_INPUTS, len(texts))
    dimension = values.get("dimensions")
    if dimension is None:
        dimension = 1536
    elif isinstance(dimension, float) and dimension.is_integer():  # JSON Schema's integer, as OpenAI reads it
        dimension = int(dimension)
    if type(dimension) is not int or not 1 <= dimension <= MAX_DIMENSIONS:
        message = f"Invalid 'dimensions': expected an integer from 1 to {MAX_DIMENSIONS}, got {str(dimension)[:40]}."
        code = "integer_above_max_value" if type(dimension) is int and dimension > MAX_DIMENSIONS else None
        raise SimulatorRejectedError(message, param="dimensions", code=code)
    if len(texts) * dimension > MAX_EMBEDDING_VALUES:
        message = f"The simulator answers at most {MAX_EMBEDDING_VALUES} values: {len(texts)} x {dimension} is more."
        raise SimulatorRejectedError(message, param="input")
    model = values.get("model")
    return EmbeddingsAsk(texts=texts, dimension=dimension, model=model, encoding=str(encoding), values=values)


def differs(headers: Mapping[str, str], model: object, messages: object) -> bool:
    """Whether this request is one of the `x-simulated-differ` percent (0 to 100) answered with other words.

    Only for the model `x-simulated-differ-for` names (when given); which requests is decided by a hash of
    the messages, so one prompt always gets the same answer and a share of distinct prompts differs.

    Raises:
        SimulatorRejectedError: the percent is not a whole number from 0 to 100.
    """
    percent = headers.get("x-simulated-differ")
    if percent is None:
        return False
    if not percent.isdigit() or not 0 <= int(percent) <= 100:
        raise SimulatorRejectedError(f"x-simulated-differ must be a percent from 0 to 100, not {percent[:20]!r}")
    only_for = headers.get("x-simulated-differ-for")
    if only_for is not None and only_for != model:
        return False
    digest = hashlib.sha256(msgspec.json.encode(messages)).digest()
    return int.from_bytes(digest[:4], "big") % 100 < int(percent)


def reply_of(headers: Mapping[str, str], model: object) -> str | None:
    """The content `x-simulated-reply` gives (at most `MAX_REPLY` characters), for `x-simulated-reply-for`'s model.

    Raises:
        SimulatorRejectedError: the reply is longer than that.
    """
    reply = headers.get("x-simulated-reply")
    only_for = headers.get("x-simulated-reply-for")
    if reply is None or (only_for is not None and only_for != model):
        return None
    if len(reply) > MAX_REPLY:
        raise SimulatorRejectedError(f"x-simulated-reply is over {MAX_REPLY} characters")
    return reply


MAX_REPLY = 4096
"""The longest `x-simulated-reply`."""
