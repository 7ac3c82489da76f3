"""Every endpoint codec passes the same tests: what the pipeline, the cache and the routes rely on.

Each codec comes with a sample of its endpoint (a request, a whole answer, the same answer streamed) as
the simulated upstream sends them; a codec module added without a sample fails
`test_every_codec_has_a_sample`.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

import proxy.endpoints
from proxy.endpoints.base import Codec
from proxy.endpoints.chat import CHAT
from proxy.endpoints.responses import RESPONSES
from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.errors import InvalidRequestError, UpstreamError
from proxy.wire.schemas import Usage
from proxy.wire.sse import split_events
from routes import Call
from routes.simulator.answers import Answer as SimulatedAnswer
from routes.simulator.answers import render_completion, render_events
from routes.simulator.responses import SimulatedResponse


@dataclass(frozen=True)
class Sample:
    codec: Codec[Any]
    request: dict[str, Any]
    answer: bytes
    events: bytes
    usage: Usage
    usage_apart: bool = True
    """The usage comes in an event of its own, which a caller that did not ask for it does not get."""


def chat() -> Sample:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    request = {"model": "gpt-4o", "messages": messages}
    asked = {**request, "stream_options": {"include_usage": True}}
    simulated = SimulatedAnswer(body=asked, latency=0, interval=0, chunks=3, fault="")
    answer = msgspec.json.encode(render_completion(simulated))
    events = b"".join(render_events(simulated))
    return Sample(CHAT, request, answer, events, msgspec.convert(simulated.usage(), Usage))


def responses() -> Sample:
    request = {"model": "gpt-4o", "instructions": "Be brief.", "input": "Hi"}
    simulated = SimulatedResponse(request, 3)
    answer = msgspec.json.encode(simulated.finished())
    events = b"".join(simulated.events())
    used = simulated.usage()
    usage = Usage(
        prompt_tokens=used["input_tokens"], completion_tokens=used["output_tokens"], total_tokens=used["total_tokens"]
    )
    return Sample(RESPONSES, request, answer, events, usage, usage_apart=False)


SAMPLES = {"chat": chat(), "responses": responses()}


@pytest.fixture(params=sorted(SAMPLES))
def sample(request: pytest.FixtureRequest) -> Sample:
    return SAMPLES[request.param]


def encoded(request: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**request, **changes}).encode()


def test_every_codec_has_a_sample() -> None:
    found = set()
    for module in pkgutil.iter_modules(proxy.endpoints.__path__):
        for value in vars(importlib.import_module(f"proxy.endpoints.{module.name}")).values():
            if not isinstance(value, type) and all(hasattr(value, name) for name in ("kind", "decode", "replay")):
                found.add(value.kind)
    assert found == set(SAMPLES)


def test_a_request_decodes_once_and_a_bad_one_is_a_400(sample: Sample) -> None:
    codec = sample.codec
    body = codec.decode(encoded(sample.request))
    assert body.raw == encoded(sample.request)
    assert codec.requested_model(body) == sample.request["model"]
    assert codec.streams(body) is False
    assert codec.streams(codec.decode(encoded(sample.request, stream=True))) is True
    for bad in (b"{", b"[]", encoded(sample.request, model=7)):
        with pytest.raises(InvalidRequestError):
            codec.decode(bad)


def test_the_upstream_body_is_the_clients_unless_something_must_change(sample: Sample) -> None:
    codec = sample.codec
    body = codec.decode(encoded(sample.request))
    assert codec.upstream_body(body, model=None, stream=False) is body.raw
    assert codec.upstream_body(body, model=sample.request["model"], stream=False) is body.raw
    rewritten = json.loads(codec.upstream_body(body, model="ft:small", stream=True))
    assert rewritten["model"] == "ft:small"
    assert {key: value for key, value in rewritten.items() if key not in ("model", "stream_options")} == {
        key: value for key, value in sample.request.items() if key != "model"
    }


def test_the_question_and_the_features_read_the_same_text(sample: Sample) -> None:
    codec = sample.codec
    asked = Call(endpoint=codec, body=codec.decode(encoded(sample.request)), headers={"x-team": "a"}, caller="c")
    assert asked.question.text
    features = codec.features(asked)
    assert features.last_user_text == asked.question.text == codec.question(asked.body)
    assert (features.model, features.caller, features.headers["x-team"]) == (sample.request["model"], "c", "a")


def test_an_answer_and_its_stream_read_with_their_usage(sample: Sample) -> None:
    codec = sample.codec
    assert codec.read_answer(sample.answer)[1] == sample.usage
    with pytest.raises(UnreadableAnswerError):
        codec.read_answer(b'{"choices": "none"}')
    cut = codec.cut(sample.events + b"data: after the end\n\n")
    assert (cut.events, cut.ended) == (sample.events, True)  # whatever follows the end is dropped
    assert codec.ends(sample.events)
    found = codec.take_usage(sample.events, keep=False)
    assert found.usage == sample.usage
    if sample.usage_apart:
        assert codec.take_usage(found.events, keep=True).usage is None  # the usage-only event was dropped
    else:
        assert found.events == sample.events
    assert codec.take_usage(sample.events, keep=True).events == sample.events


def test_a_stream_breaks_at_an_unreadable_or_error_event(sample: Sample) -> None:
    codec = sample.codec
    first = sample.events.split(b"\n\n")[0] + b"\n\n"
    error = codec.error_event(UpstreamError("overloaded"))
    assert codec.cut(first + error + sample.events).error is not None
    assert codec.cut(first + error).events == first
    assert codec.cut(first + b'data: {"choices": 5}\n\n').unreadable is not None
    assert codec.cut(first).ended is False


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("stored_as", ["answer", "stream"])
def test_a_stored_answer_replays_in_either_form(sample: Sample, stored_as: str, stream: bool) -> None:
    codec = sample.codec
    stored = codec.stored(sample.answer) if stored_as == "answer" else codec.stored_stream(sample.events)
    assert stored is not None
    assert codec.replayable(stored)
    replayed = codec.replay(stored, stream=stream, wants_usage=True)
    assert replayed.usage == sample.usage
    if stream:
        assert codec.ends(replayed.body)
        assert codec.cut(replayed.body).ended
        assert codec.take_usage(replayed.body, keep=True).usage == sample.usage
        without = codec.replay(stored, stream=True, wants_usage=False).body
        assert (codec.take_usage(without, keep=True).usage is None) is sample.usage_apart
    else:
        assert codec.read_answer(replayed.body) == (replayed.model, sample.usage)


def test_what_is_not_a_finished_answer_is_never_stored_or_replayed(sample: Sample) -> None:
    codec = sample.codec
    unfinished = b"".join(event + b"\n\n" for event in split_events(sample.events)[:-1])  # its end event left out
    assert codec.stored_stream(unfinished) is None
    assert not codec.replayable(b"X" + sample.answer)
    with pytest.raises(UnreadableAnswerError):
        codec.replay(codec.stored(b'{"choices": 1}'), stream=False, wants_usage=False)


def test_the_cache_reads_determinism_and_the_context_of_the_question(sample: Sample) -> None:
    codec = sample.codec
    assert codec.deterministic(codec.decode(encoded(sample.request, temperature=0)))
    assert not codec.deterministic(codec.decode(encoded(sample.request, temperature=0.7)))
    assert codec.wants_usage(codec.decode(encoded(sample.request, stream=True, stream_options={"include_usage": True})))
    body = codec.decode(encoded(sample.request))
    context = codec.cache_context(body)
    assert context is not None
    assert set(context) == set(body.fields)
    assert context != body.fields  # the question itself is not part of it
    assert "model" not in codec.ignored_fields
    assert "stream" in codec.ignored_fields  # a hit replays in either form
