"""Run one operation of OpenAI's spec against a target: generate cases, send each, check it, tally it.

Cases come from schemathesis (`APIOperation.as_strategy`), driven by Hypothesis with a fixed seed,
no example database and no shrinking, so that CI sends the same requests for the same commit and test
selection (Hypothesis also draws values from the project's loaded modules), and a run's length is bounded
by its number of examples.
A problem does not stop the run: every distinct kind of problem is kept with the smallest request that
showed it, and at the end that request is cut down greedily (headers, body fields, messages and their
fields dropped one at a time while the problem stays), so the report shows a short request that fails.

`FUZZ_SCALE` multiplies every run's number of examples (e.g. `FUZZ_SCALE=20` for a long local run);
`FUZZ_SEED` replaces the fixed seed (11) with another integer, to explore other cases.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import Case, GenerationMode

from tests.fuzz.checks import Problem, Reply, bound_beyond_schema, error_fields, problems
from tests.fuzz.conftest import REQUEST_TIMEOUT, SCALE, SEED, Row, Target, log_problems
from tests.fuzz.spec import operations
from tests.openapi import SchemaMismatchError, validate

__all__ = ["FuzzRun", "Plan", "Sent"]

_SCHEMAS = {
    "POST /chat/completions": "CreateChatCompletionResponse",
    "POST /embeddings": "CreateEmbeddingResponse",
    "POST /completions": "CreateCompletionResponse",
    "GET /models": "ListModelsResponse",
    "GET /models/{model}": "Model",
}
# Headers that say nothing about the case: not sent again while cutting a request down, nor shown.
_USUAL = {"user-agent", "accept-encoding", "accept", "connection", "x-schemathesis-testcaseid"}
_NO_JSON = object()
_MAX_PROBES = 150
"""Requests spent at most on cutting down one failing request."""


@dataclass(frozen=True)
class Plan:
    """One fuzz run: an operation of the spec, positive or negative data, how many cases, stream or not."""

    operation: str
    """The spec's label, e.g. `POST /chat/completions`."""
    mode: GenerationMode
    examples: int
    stream: bool | None = None
    """For chat: `stream` forced to this value in every body that is an object (None: as generated)."""
    fixed: tuple[tuple[str, Any], ...] = ()
    """Members forced in every body that is an object (embeddings' `encoding_format: float`: OpenAI's schema
    knows only float vectors; base64 ones are checked by the e2e tests)."""

    @property
    def must_accept(self) -> bool:
        """Whether a 4xx is a problem: for valid data, except an id that names no model (a 404 is right)."""
        return self.mode is GenerationMode.POSITIVE and "{" not in self.operation

    @property
    def label(self) -> str:
        method, path = self.operation.split(" ", 1)
        kind = "" if self.stream is None else (" stream" if self.stream else " json")
        return f"{method} /v1{path}{kind} {self.mode.value}"

    @property
    def id(self) -> str:
        return self.label.replace(" /v1/", " ").replace("/", "-").replace(" ", "-").replace("{model}", "id")


@dataclass(frozen=True)
class Sent:
    """One request as sent: a JSON body is kept decoded, so that it can be cut down field by field."""

    method: str
    url: str
    headers: dict[str, str]
    json: Any = _NO_JSON
    data: bytes | None = None

    @classmethod
    def of(cls, case: Case[Any], base_url: str) -> Sent:
        kwargs = case.as_transport_kwargs(base_url=base_url)
        url = str(httpx.URL(kwargs["url"], params=kwargs.get("params") or None))
        # Whitespace around a value is not part of it (RFC 9110 5.5), and h11 refuses to send it.
        headers = {str(k): str(v).strip(" \t") for k, v in kwargs["headers"].items()}
        if kwargs.get("cookies"):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
        data = kwargs.get("data")
        data = data if data is None or isinstance(data, bytes) else str(data).encode("utf-8")
        return cls(case.method, url, headers, kwargs.get("json", _NO_JSON), data)

    @property
    def body(self) -> bytes | None:
        if self.json is _NO_JSON:
            return self.data
        try:
            return json.dumps(self.json, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: only escaped can it be sent
            return json.dumps(self.json).encode("ascii")

    @property
    def stream(self) -> bool:
        return isinstance(self.json, dict) and self.json.get("stream") is True

    def show(self) -> str:
        """The request as the report shows it: method, URL, the telling headers, the body (cut at 1,500 bytes)."""
        text = f"{self.method} {self.url}"
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _USUAL}
        if headers:
            text += f"\n    headers: {headers}"
        body = self.body
        if body is not None:
            cut = body[:1500] + (b"..." if len(body) > 1500 else b"")
            text += f"\n    body ({len(body)} bytes): {cut.decode('utf-8', 'replace')}"
        return text

    def smaller(self) -> Iterator[Sent]:
        """Requests with one thing less: a header, a body field, all messages but one, a message field."""
        for name in self.headers:
            yield dataclasses.replace(self, headers={k: v for k, v in self.headers.items() if k != name})
        if not isinstance(self.json, dict):
            return
        for key in self.json:
            yield dataclasses.replace(self, json={k: v for k, v in self.json.items() if k != key})
        messages = self.json.get("messages")
        if not isinstance(messages, list):
            return
        if len(messages) > 1:
            yield from (dataclasses.replace(self, json={**self.json, "messages": [one]}) for one in messages)
        for i, message in enumerate(messages):
            for key in message if isinstance(message, dict) else {}:
                fewer = [*messages[:i], {k: v for k, v in message.items() if k != key}, *messages[i + 1 :]]
                yield dataclasses.replace(self, json={**self.json, "messages": fewer})


@dataclass
class _Seen:
    """The smallest request that showed one kind of problem, and how often that kind was seen."""

    count: int
    request: Sent
    detail: str


def _with(members: dict[str, Any], case: Case[Any]) -> Case[Any]:
    if isinstance(case.body, dict):
        case.body = {**case.body, **members}
    return case


class FuzzRun:
    """Sends the cases of one `Plan` to one `Target` and keeps what came back."""

    def __init__(self, target: Target, plan: Plan, row: Row) -> None:
        self.target = target
        self.plan = plan
        self.row = row
        self.seen: dict[str, _Seen] = {}
        self._http = httpx.Client(timeout=REQUEST_TIMEOUT)

    def run(self) -> None:
        """Generate and send every case, pick up what the server logged after the last, cut failures down."""
        operation = operations()[self.plan.operation]
        strategy = operation.as_strategy(generation_mode=self.plan.mode)
        members = dict(self.plan.fixed) | ({} if self.plan.stream is None else {"stream": self.plan.stream})
        if members:
            strategy = strategy.map(lambda case: _with(members, case))

        @settings(
            max_examples=max(1, math.ceil(self.plan.examples * SCALE)),
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=(HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much),
        )
        @given(strategy)
        def one(case: Case[Any]) -> None:
            sent = Sent.of(case, f"{self.target.origin}/v1")
            outcome, found = self.exchange(sent)
            self.row.statuses[outcome] += 1
            for problem in found:
                self._note(problem, sent)

        started = time.monotonic()
        self.target.new_log()  # earlier runs' lines are theirs
        try:
            seed(SEED)(one)()
            for line in log_problems(self.target.sync()):
                self._note(Problem("server logged an error", line), None)
            self.row.seconds += time.monotonic() - started
            for kind, seen in self.seen.items():
                if seen.request.method != "-":
                    seen.request = self._cut_down(kind, seen.request)
        finally:
            self._http.close()

    def exchange(self, sent: Sent) -> tuple[str, list[Problem]]:
        """Send one request; return its status (or what happened instead) and its problems."""
        request_id = f"fuzz-{uuid.uuid4().hex[:16]}"
        headers = [(k.encode(), v.encode()) for k, v in sent.headers.items()] + [(b"x-request-id", request_id.encode())]
        try:
            response = self._http.send(
                self._http.build_request(sent.method, sent.url, headers=headers, content=sent.body)
            )
        except httpx.LocalProtocolError:  # a header h11 will not send; the raw-socket tests cover those
            return "not sent", []
        except httpx.TransportError as exc:
            return "no response", [Problem("no response", f"{type(exc).__name__}: {exc}")]
        reply = Reply.of(response)
        schema = _SCHEMAS[self.plan.operation]
        found = problems(
            reply, request_id=request_id, schema_name=schema, stream=sent.stream, chat=sent.method == "POST"
        )
        if self.plan.must_accept and 400 <= reply.status < 500 and not bound_beyond_schema(reply):
            # The error's param is part of the kind: cutting the request down must not swap one refusal for another.
            kind = f"a request the spec allows was refused ({reply.status} {error_fields(reply)})"
            found.append(Problem(kind, response.text[:300]))
        found += [Problem("server logged an error", line) for line in log_problems(self.target.new_log())]
        return str(reply.status), found

    def _note(self, problem: Problem, sent: Sent | None) -> None:
        seen = self.seen.get(problem.kind)
        if seen is None:
            self.seen[problem.kind] = _Seen(
                count=1, request=sent or Sent("-", "(after the last case)", {}), detail=problem.detail
            )
            return
        seen.count += 1
        if sent is not None and len(sent.body or b"") < len(seen.request.body or b""):
            seen.request, seen.detail = sent, problem.detail

    def _cut_down(self, kind: str, sent: Sent) -> Sent:
        """Drop what the problem does not need, one thing at a time, while the problem stays.

        Two passes over the candidates at most, and `_MAX_PROBES` requests: a greedy cut, not a minimum. A
        request cut from valid data must stay valid, or a refusal of what is left would prove nothing.
        """
        probes = 0
        for _ in range(2):
            index, changed = 0, False
            while probes < _MAX_PROBES:
                candidates = list(sent.smaller())
                if index >= len(candidates):
                    break
                if not self._allowed(candidates[index]):
                    index += 1
                    continue
                probes += 1
                if kind in {problem.kind for problem in self.exchange(candidates[index])[1]}:
                    sent, changed = candidates[index], True  # the same index now names the next thing to drop
                else:
                    index += 1
            if not changed:
                break
        return sent

    def _allowed(self, sent: Sent) -> bool:
        """Whether a cut-down request is still the kind of data its plan sends: valid per the spec, for positive."""
        if self.plan.mode is not GenerationMode.POSITIVE or self.plan.operation != "POST /chat/completions":
            return True
        try:
            validate("CreateChatCompletionRequest", sent.json)
        except SchemaMismatchError:
            return False
        return True

    def report(self) -> str:
        """Every kind of problem seen, how often, and the request, cut down, that shows it."""
        lines = [f"{self.target.name} {self.plan.label}: {self.row.statuses.total()} cases, {dict(self.row.statuses)}"]
        for kind, seen in sorted(self.seen.items(), key=lambda item: -item[1].count):
            lines += [f"- {kind} ({seen.count}x): {seen.detail[:300]}", f"  {seen.request.show()}"]
        return "\n".join(lines)
