"""Every endpoint codec passes the same tests: what the pipeline, the cache and the routes rely on.

Each codec comes with a sample of its endpoint (a request, a whole answer, the same answer streamed) as
the simulated upstream sends them; a codec module added without a sample fails
`test_every_codec_has_a_sample`. An endpoint that never streams (embeddings) has no events, and skips
what only streams do; one that is always deterministic says so.
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
from proxy.endpoints.completions import COMPLETIONS
from proxy.endpoints.embeddings import EMBEDDINGS
from proxy.endpoints.responses import RESPONSES
from proxy.wire.answers import UnreadableAnswerError
from proxy.wire.errors import InvalidRequestError, UpstreamError, upstream_status_error
from proxy.wire.schemas import CompletionTokensDetails, PromptTokensDetails, Usage
from proxy.wire.sse import split_events
from routes import Call
from routes.kind import ENDPOINT_KINDS
from routes.simulator.answers import Answer as SimulatedAnswer
from routes.simulator.answers import render_completion, render_events
from routes.simulator.completions import render_completion as render_text_completion
from routes.simulator.embeddings import encoded as vector_as
from routes.simulator.responses import SimulatedResponse


@dataclass(frozen=True)
class Sample:
    codec: Codec[Any]
    request: dict[str, Any]
    answer: bytes
    events: bytes | None
    """None: the endpoint never streams."""
    usage: Usage
    usage_apart: bool = True
    """The usage comes in an event of its own, which a caller that did not ask for it does not get."""
    sampled: bool = True
    """Whether it is deterministic only with fixed sampling (else always)."""
    semantic: bool = True
    """Whether a semantic cache can key it on its context (its question is the last of a conversation)."""

    @property
    def stream(self) -> bytes:
        if self.events is None:
            pytest.skip(f"{self.codec.kind} never streams")
        return self.events


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
        prompt_tokens=used["input_tokens"],
        completion_tokens=used["output_tokens"],
        total_tokens=used["total_tokens"],
        prompt_tokens_details=PromptTokensDetails(cached_tokens=used["input_tokens_details"]["cached_tokens"]),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=used["output_tokens_details"]["reasoning_tokens"]
        ),
    )
    return Sample(RESPONSES, request, answer, events, usage, usage_apart=False)


def embeddings() -> Sample:
    request = {"model": "text-embedding-3-small", "input": "When is support open?", "encoding_format": "base64"}
    datum = {"object": "embedding", "index": 0, "embedding": vector_as([0.5, -0.25, 0.125], "base64")}
    usage = {"prompt_tokens": 5, "total_tokens": 5}
    answer = msgspec.json.encode({"object": "list", "data": [datum], "model": request["model"], "usage": usage})
    return Sample(EMBEDDINGS, request, answer, None, msgspec.convert(usage, Usage), sampled=False, semantic=False)


def completions() -> Sample:
    request = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "logprobs": 2}
    asked = {**request, "stream_options": {"include_usage": True}}
    answer, events = render_text_completion(COMPLETIONS.decode(json.dumps(asked).encode()).view, 3)
    usage = msgspec.convert(answer["usage"], Usage)
    return Sample(COMPLETIONS, request, msgspec.json.encode(answer), b"".join(events), usage, semantic=False)


SAMPLES = {"chat": chat(), "responses": responses(), "embeddings": embeddings(), "completions": completions()}


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
    assert found <= set(ENDPOINT_KINDS)  # a route's `endpoints` setting can name each


def test_a_request_decodes_once_and_a_bad_one_is_a_400(sample: Sample) -> None:
    codec = sample.codec
    body = codec.decode(encoded(sample.request))
    assert body.raw == encoded(sample.request)
    assert codec.requested_model(body) == sample.request["model"]
    assert codec.streams(body) is False
    assert codec.streams(codec.decode(encoded(sample.request, stream=True))) is (sample.events is not None)
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
    cut = codec.cut(sample.stream + b"data: after the end\n\n")
    assert (cut.events, cut.ended) == (sample.stream, True)  # whatever follows the end is dropped
    assert codec.ends(sample.stream)
    found = codec.take_usage(sample.stream, keep=False)
    assert found.usage == sample.usage
    if sample.usage_apart:
        assert codec.take_usage(found.events, keep=True).usage is None  # the usage-only event was dropped
    else:
        assert found.events == sample.stream
    assert codec.take_usage(sample.stream, keep=True).events == sample.stream


def test_a_stream_breaks_at_an_unreadable_or_error_event(sample: Sample) -> None:
    codec = sample.codec
    first = sample.stream.split(b"\n\n")[0] + b"\n\n"
    error = codec.error_event(UpstreamError("overloaded"))
    assert codec.cut(first + error + sample.stream).error is not None
    assert codec.cut(first + error).events == first
    assert codec.cut(first + b'data: {"choices": 5}\n\n').unreadable is not None
    assert codec.cut(first).ended is False


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("stored_as", ["answer", "stream"])
def test_a_stored_answer_replays_in_either_form(sample: Sample, stored_as: str, stream: bool) -> None:
    codec = sample.codec
    if sample.events is None and (stored_as == "stream" or stream):
        pytest.skip(f"{codec.kind} never streams")
    stored = codec.stored(sample.answer) if stored_as == "answer" else codec.stored_stream(sample.stream)
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
    assert not codec.replayable(b"X" + sample.answer)
    with pytest.raises(UnreadableAnswerError):
        codec.replay(codec.stored(b'{"choices": 1}'), stream=False, wants_usage=False)
    unfinished = b"".join(event + b"\n\n" for event in split_events(sample.stream)[:-1])  # its end event left out
    assert codec.stored_stream(unfinished) is None


def test_the_cache_reads_determinism_and_the_context_of_the_question(sample: Sample) -> None:
    codec = sample.codec
    assert codec.deterministic(codec.decode(encoded(sample.request, temperature=0)))
    sampled = codec.decode(encoded(sample.request, temperature=0.7))
    assert codec.deterministic(sampled) is not sample.sampled
    streamed = codec.decode(encoded(sample.request, stream=True, stream_options={"include_usage": True}))
    assert codec.wants_usage(streamed) is (sample.events is not None)
    body = codec.decode(encoded(sample.request))
    context = codec.cache_context(body)
    assert "model" not in codec.ignored_fields
    if sample.events is not None:
        assert "stream" in codec.ignored_fields  # a hit replays in either form
    if not sample.semantic:
        assert context is None
        return
    assert context is not None
    assert set(context) == set(body.fields)
    assert context != body.fields  # the question itself is not part of it


@pytest.mark.parametrize("status", [404, 429, 500])
def test_an_upstream_error_for_a_request_naming_nothing_stored_stays_the_route_s(sample: Sample, status: int) -> None:
    error = upstream_status_error(status, b"{}")
    assert sample.codec.upstream_error(sample.codec.decode(encoded(sample.request)), error) is error


def test_the_access_log_reads_a_request_s_content_and_its_answer_s_text(sample: Sample) -> None:
    codec = sample.codec
    body = codec.decode(encoded(sample.request))
    content = codec.content(body, sample.answer)
    assert (content.messages is None) != (content.input is None)  # a conversation, or a text endpoint's input
    if sample.events is None:  # embeddings: vectors are no text
        assert content.answer is None
    else:
        assert content.answer
        assert all(isinstance(text, str) and text for text in content.answer)
    assert codec.content(body, None).answer is None
    assert codec.content(body, b"not an answer").answer is None
