"""Hostile request bodies against the real `turnout serve` and `turnout simulate` (issue 11, points 5, 8 and 9).

Each attack is sent as raw bytes (the SDK would refuse most of them) to three targets: Turnout without a
policy (the caller's model is forwarded), Turnout with a policy whose route rewrites `model`, and that
policy's RAG route (which rebuilds `messages`); each as a completion and as a stream, with
`temperature: 0` so that the response cache keys the body too. A body Turnout cannot read whole is a
400 that names the problem and never reaches the upstream; a body it accepts reaches the upstream with
every member it does not rewrite byte for byte. Nothing is ever a 500, and no traceback is logged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import (
    RunningProcess,
    SimulatorCalls,
    clean_env,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_cli,
    turnout_env,
)
from tests.openapi import validate

FT = "ft:gpt-3.5-turbo-0613:acme::8Xyz"
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
embedder: {upstream: sim, model: text-embedding-3-small, dimension: 256}
routes:
  pinned: {upstream: sim, model: "ft:gpt-3.5-turbo-0613:acme::8Xyz"}
  docs: {kind: rag, index: ./index, answer_with: pinned, top_k: 2, context_tokens: 400}
rules:
  - name: documents
    when: {header: {x-e2e-route: docs}}
    route: docs
  - name: default
    route: pinned
"""
DOCS = {"refunds.md": "# Billing\n\n## Refunds\n\nRefunds of a cancelled order are paid back within 30 days.\n"}


def nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@dataclass(frozen=True)
class Target:
    name: str
    process: RunningProcess
    headers: dict[str, str]
    model: str | None
    """The model the upstream must receive (None: the caller's own)."""


@pytest.fixture(scope="module")
def routed(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProcess]:
    """Turnout with a model-rewriting route as the default and a RAG route chosen by a header."""
    folder = Path(tmp_path_factory.mktemp("hostile"))
    (folder / "docs").mkdir()
    for name, text in DOCS.items():
        (folder / "docs" / name).write_text(text, encoding="utf-8")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    index = ["--index", str(folder / "index"), "--config", str(policy)]
    built = turnout_cli("index", "add", str(folder / "docs"), *index, env=env)
    assert built.returncode == 0, built.stderr
    with running(start_turnout(env)) as process:
        yield process


@pytest.fixture(scope="module", params=["plain", "model-rewrite", "rag"])
def target(request: pytest.FixtureRequest, turnout: RunningProcess) -> Target:
    if request.param == "plain":
        return Target("plain", turnout, {}, None)
    routed: RunningProcess = request.getfixturevalue("routed")
    if request.param == "model-rewrite":
        return Target("model-rewrite", routed, {}, FT)
    return Target("rag", routed, {"x-e2e-route": "docs"}, FT)


def body(member: bytes, *, stream: bool, extra: bytes = b"") -> bytes:
    """A chat request with `member` (raw JSON members) added; unique, so that no cached answer replies."""
    question = f"How many days until refunds are paid back? ({uuid.uuid4().hex})".encode()
    head = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + question + b'"' + extra + b"}],"
    return head + b'"temperature":0,"stream":' + (b"true" if stream else b"false") + b"," + member + b"}"


def post(target: Target, raw: bytes, request_id: str) -> httpx.Response:
    headers = {"content-type": "application/json", "x-request-id": request_id, **target.headers}
    with httpx.Client(base_url=target.process.origin, timeout=30.0) as http:
        response = http.post("/v1/chat/completions", content=raw, headers=headers)
        response.read()
        return response


def assert_rejected(response: httpx.Response, code: str | None, param: str | None, says: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    payload: dict[str, Any] = response.json()
    validate("ErrorResponse", payload)
    error: dict[str, Any] = payload["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] == param
    assert says in error["message"]
    return error


def log_size(process: RunningProcess) -> int:
    return len(process.stderr())


def assert_healthy(process: RunningProcess, since: int = 0) -> None:
    """No traceback and no unexpected error in what `process` logged after `since` characters."""
    log = process.stderr()[since:]
    assert "Traceback" not in log, log[-3000:]
    assert "unexpected error" not in log, log[-3000:]


# --- point 5: valid JSON that a second decode could not read -------------------------------------------------

ATTACKS = {
    "1e400 in an unknown field": (b'"x_attack":1e400', "number_out_of_range", "x_attack", "out of range"),
    "a 10,000-digit integer": (b'"x_attack":' + b"7" * 10_000, "number_out_of_range", "x_attack", "out of range"),
    "nesting of 979 levels": (b'"x_attack":' + nested(979), "nested_too_deeply", "*", "more than 128 levels"),
    "nesting of 200 levels": (b'"x_attack":' + nested(200), "nested_too_deeply", "x_attack", "more than 128 levels"),
    "invalid UTF-8 in a string": (b'"x_attack":"caf\xe9"', "invalid_utf8", "x_attack", "not valid UTF-8"),
    "1e400 deep in a tool": (
        b'"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","x":[1e400]}}}]',
        "number_out_of_range",
        "tools",
        "out of range",
    ),
    "invalid UTF-8 in a message's name": (b'"x":1', "invalid_utf8", "messages", "not valid UTF-8"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_body_turnout_cannot_read_whole_is_a_400_and_never_forwarded(
    target: Target, simulator_call: SimulatorCalls, attack: str, stream: bool
) -> None:
    member, code, param, says = ATTACKS[attack]
    extra = b',"name":"\xff\xfe"' if "message's name" in attack else b""
    request_id, since = new_request_id(), log_size(target.process)

    response = post(target, body(member, stream=stream, extra=extra), request_id)

    error = assert_rejected(response, code, error_param(response, param), says)
    assert error["message"].startswith("Invalid request body: ")
    assert simulator_call.find(request_id) is None
    assert_healthy(target.process, since)


def error_param(response: httpx.Response, expected: str) -> str | None:
    """`expected`, or for a nesting past the stack ("*") whatever the server could say: the member or None."""
    if expected != "*":
        return expected
    param: str | None = response.json()["error"]["param"]
    assert param in ("x_attack", None)
    return param


EDGES = (
    b'"x_edge":{"big":1e308,"tiny":1e-400,"long":'
    + b"7" * 4_000
    + b',"deep":'
    + nested(100)
    + b',"escapes":"\\u00e9\\ud83d\\ude80 \\" \\\\","spaced" :  [ 1.0e+2 , -0 ]}'
)


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_a_body_at_the_edges_reaches_the_upstream_byte_for_byte(
    target: Target, simulator_call: SimulatorCalls, stream: bool
) -> None:
    request_id, since = new_request_id(), log_size(target.process)

    response = post(target, body(EDGES, stream=stream), request_id)

    assert response.status_code == 200, response.text[:500]
    record = simulator_call(request_id)
    assert EDGES.decode() in record["raw"]  # the member as it came, though `model` or `messages` changed
    assert record["body"]["model"] == (target.model or "gpt-4o-mini")
    assert_healthy(target.process, since)


# --- point 8: what OpenAI bounds, Turnout bounds; what OpenAI accepts, Turnout accepts ---------------------

BOUNDS = {
    "n of 2 to the 70th": (b'"n":1180591620717411303424', "integer_above_max_value", "n", "Expected a value <= 128"),
    "n of 1.5": (b'"n":1.5', "invalid_type", "n", "expected an integer, but got a decimal number"),
    "temperature of 3": (b'"temperature":3', "decimal_above_max_value", "temperature", "Expected a value <= 2"),
    "top_logprobs of 21": (b'"top_logprobs":21', "integer_above_max_value", "top_logprobs", "<= 20"),
    "logit_bias of 101": (b'"logit_bias":{"50256":101}', "integer_above_max_value", "logit_bias.50256", "<= 100"),
}


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
@pytest.mark.parametrize("case", list(BOUNDS))
def test_a_parameter_out_of_openais_range_is_its_400_and_never_forwarded(
    target: Target, simulator_call: SimulatorCalls, case: str, stream: bool
) -> None:
    member, code, param, says = BOUNDS[case]
    request_id, since = new_request_id(), log_size(target.process)

    response = post(target, body(member, stream=stream).replace(b'"temperature":0,', b""), request_id)

    assert_rejected(response, code, param, says)
    assert simulator_call.find(request_id) is None
    assert_healthy(target.process, since)


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_n_of_1_0_is_accepted_as_openai_accepts_it(
    target: Target, simulator_call: SimulatorCalls, stream: bool
) -> None:
    request_id = new_request_id()

    response = post(target, body(b'"n":1.0', stream=stream), request_id)

    assert response.status_code == 200, response.text[:500]
    assert '"n":1.0' in simulator_call(request_id)["raw"]


def test_the_sdk_sees_openais_error_for_n_out_of_range(turnout: RunningProcess) -> None:
    with sdk_client(turnout.origin) as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], n=2**70)
    assert caught.value.param == "n"
    assert caught.value.code == "integer_above_max_value"


# --- point 9: the simulator bounds what a request makes it allocate -------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw", "headers", "param"),
    [
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user"}],"n":1180591620717411303424}', {}, "n"),
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user"}],"x":1e400}', {}, "x"),
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user"}],"x":' + nested(979) + b"}", {}, "*"),
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user"}]}', {"x-simulated-chunks": "1e9"}, None),
        (
            "/v1/chat/completions",
            b'{"model":"m","messages":[{"role":"user"}]}',
            {"x-simulated-latency-ms": "inf"},
            None,
        ),
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user"}]}', {"x-simulated-fault": "999"}, None),
        ("/v1/embeddings", b'{"model":"m","input":"a","dimensions":1000000000000}', {}, "dimensions"),
        ("/v1/embeddings", b'{"model":"m","input":["a"' + b',"a"' * 2048 + b"]}", {}, "input"),
    ],
)
def test_the_simulator_answers_an_openai_400_and_keeps_answering(
    simulator: RunningProcess, path: str, raw: bytes, headers: dict[str, str], param: str | None
) -> None:
    since = log_size(simulator)
    with httpx.Client(base_url=simulator.origin, timeout=30.0) as http:
        response = http.post(path, content=raw, headers=headers)
        assert response.status_code == 400, response.text[:500]
        error = response.json()["error"]
        validate("ErrorResponse", response.json())
        assert param == "*" or error["param"] == param
        after = http.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
        assert after.status_code == 200
    assert_healthy(simulator, since)


def test_a_hostile_simulator_header_through_a_keyless_turnout_is_a_400() -> None:
    """Without a key Turnout answers from the simulator in its own process: a header must not blow it up."""
    with running(start_turnout(clean_env())) as process, httpx.Client(base_url=process.origin, timeout=30.0) as http:
        ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        for headers in ({"x-simulated-chunks": "1000000000"}, {"x-simulated-latency-ms": "1e15"}):
            response = http.post("/v1/chat/completions", json=ask, headers=headers)
            assert response.status_code == 400, response.text[:500]
            validate("ErrorResponse", response.json())
        assert http.post("/v1/chat/completions", json=ask).status_code == 200
        assert_healthy(process)
