"""The traffic log through the real server (issue 16): every endpoint kind, whole and streamed, read back.

One `turnout serve` with `traffic: {enabled: true, log: content}` on an SQLite file, driven by the official SDK;
each test reads what the server wrote with the same `TrafficStore` the export and replay commands use, and
checks it against what the SDK received: a stream is logged as the answer it adds up to, tool calls included.
Also: redaction, a rule's `log: metadata`, errors, the pass-through, feedback over HTTP and from the CLI.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.traffic import Exchange, open_traffic_store
from tests.e2e.conftest import (
    CLIENT_KEY,
    SERVER_KEY,
    RunningProcess,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_cli,
    turnout_env,
)

POLICY = """
upstreams:
  sim:
    base_url: ${SIM_URL}
    api_key: ${OPENAI_API_KEY}
routes:
  small: {upstream: sim, model: gpt-4o-mini}
  gpt4: {upstream: sim, model: gpt-4}
baseline: gpt4
traffic:
  enabled: true
  store: sqlite:///${TRAFFIC_DB}
  log: content
  redact: {patterns: ["ACME-[0-9]+"]}
rules:
  - name: quiet
    when: {caller: quiet-team}
    route: small
    log: metadata
  - name: tools
    when: {has_tools: true}
    route: gpt4
  - name: default
    route: small
"""
TOOL: Any = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "parameters": {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]},
    },
}
MESSAGES: Any = [{"role": "user", "content": "Where is my order?"}]


class Server:
    def __init__(self, process: RunningProcess, database: Path) -> None:
        self.process = process
        self.database = database
        self.url = f"sqlite:///{database}"
        self.client = sdk_client(process.origin)

    def logged(self, request_id: str, within: float = 10.0) -> Exchange:
        """The exchange as the server logged it (waiting for the writer)."""

        async def read() -> Exchange | None:
            store = open_traffic_store(self.url)
            try:
                for _ in range(int(within / 0.05)):
                    found = await store.get(request_id)
                    if found is not None:
                        return found
                    await asyncio.sleep(0.05)
                return None
            finally:
                await store.close()

        exchange = asyncio.run(read())
        assert exchange is not None, f"{request_id} was not logged"
        return exchange


@pytest.fixture(scope="module")
def server(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = Path(tmp_path_factory.mktemp("traffic"))
    policy = directory / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    database = directory / "traffic.db"
    env = turnout_env(
        simulator,
        TURNOUT_CONFIG=str(policy),
        SIM_URL=f"{simulator.origin}/v1",
        TRAFFIC_DB=str(database),
        TURNOUT_DATA_DIR=str(directory / "data"),
    )
    with running(start_turnout(env)) as process:
        server = Server(process, database)
        yield server
        server.client.close()


def ids() -> tuple[str, dict[str, str]]:
    request_id = new_request_id()
    return request_id, {"x-request-id": request_id}


def test_a_chat_completion_is_logged_as_sent_and_answered(server: Server) -> None:
    request_id, headers = ids()
    raw = server.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, temperature=0.2, extra_headers=headers
    )
    body = json.loads(raw.http_response.text)
    logged = server.logged(request_id)
    assert logged.endpoint == "chat.completions"
    assert logged.stream is False
    assert (logged.route, logged.rule, logged.reason) == ("small", "default", "catch-all")
    assert logged.model == "gpt-4o-mini"
    assert logged.status == 200
    assert logged.error is None
    assert logged.request == {"model": "gpt-4o", "messages": MESSAGES, "temperature": 0.2}
    assert logged.answer == body
    assert logged.usage == body["usage"]
    assert logged.cost is not None
    assert str(logged.cost.normalize()) == raw.headers["x-turnout-cost-usd"]
    assert logged.baseline is not None
    assert logged.savings == logged.baseline - logged.cost
    assert logged.latency_ms is not None
    assert logged.latency_ms > 0
    assert logged.ttfb_ms is not None
    assert 0 < logged.ttfb_ms <= logged.latency_ms


def test_a_chat_stream_with_tool_calls_is_logged_as_the_completion_it_adds_up_to(server: Server) -> None:
    request_id, headers = ids()
    stream = server.client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        tools=[TOOL],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    )
    chunks = list(stream)
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] = call.id or entry["id"]
                entry["name"] += (call.function and call.function.name) or ""
                entry["arguments"] += (call.function and call.function.arguments) or ""
    assert calls, "the simulator calls the offered tool"
    logged = server.logged(request_id)
    assert (logged.route, logged.rule, logged.stream) == ("gpt4", "tools", True)
    assert logged.answer is not None
    [choice] = logged.answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert [
        {"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in choice["message"]["tool_calls"]
    ] == [calls[index] for index in sorted(calls)]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["order"]
    usage = chunks[-1].usage
    assert usage is not None
    assert logged.usage == usage.model_dump(exclude_unset=True)
    assert logged.request is not None
    assert logged.request["tools"] == [TOOL]


def test_a_chat_stream_of_text_is_logged_whole(server: Server) -> None:
    request_id, headers = ids()
    chunks = list(
        server.client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=headers)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    logged = server.logged(request_id)
    assert logged.answer is not None
    assert logged.answer["object"] == "chat.completion"
    assert logged.answer["choices"][0]["message"]["content"] == text
    assert logged.answer["id"] == chunks[0].id
    assert logged.usage is not None
    assert logged.usage["completion_tokens"] > 0


def test_a_response_is_logged_whole_and_streamed(server: Server) -> None:
    request_id, headers = ids()
    raw = server.client.responses.with_raw_response.create(model="gpt-4o", input="Hello", extra_headers=headers)
    logged = server.logged(request_id)
    assert logged.endpoint == "responses"
    assert logged.stream is False
    assert logged.answer == json.loads(raw.http_response.text)
    assert logged.answer is not None
    assert logged.usage is not None
    assert logged.usage == logged.answer["usage"]
    assert "input_tokens" in logged.usage
    assert logged.request == {"model": "gpt-4o", "input": "Hello"}

    request_id, headers = ids()
    events = list(
        server.client.responses.create(
            model="gpt-4o", input="Look it up", tools=[_response_tool()], stream=True, extra_headers=headers
        )
    )
    assert events[-1].type == "response.completed"
    final = events[-1].response
    logged = server.logged(request_id)
    assert logged.stream is True
    assert logged.answer is not None
    assert logged.answer["id"] == final.id
    assert logged.answer["status"] == "completed"
    assert [item["type"] for item in logged.answer["output"]] == [item.type for item in final.output]
    calls = [item for item in logged.answer["output"] if item["type"] == "function_call"]
    assert calls
    assert calls[0]["name"] == "lookup_order"
    assert json.loads(calls[0]["arguments"])["order"]
    assert logged.usage is not None
    assert final.usage is not None
    assert logged.usage["total_tokens"] == final.usage.total_tokens


def _response_tool() -> Any:
    return {"type": "function", "name": "lookup_order", "parameters": TOOL["function"]["parameters"]}


def test_a_legacy_completion_is_logged_whole_and_streamed(server: Server) -> None:
    request_id, headers = ids()
    whole = server.client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", extra_headers=headers)
    logged = server.logged(request_id)
    assert logged.endpoint == "completions"
    assert logged.stream is False
    assert logged.answer is not None
    assert logged.answer["choices"][0]["text"] == whole.choices[0].text

    request_id, headers = ids()
    # A stream's chunks carry `finish_reason: null`, which the SDK's `Completion` type refuses when strict.
    lenient = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{server.process.origin}/v1", max_retries=0)
    chunks = list(
        lenient.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi", stream=True, extra_headers=headers)
    )
    lenient.close()
    logged = server.logged(request_id)
    assert logged.stream is True
    assert logged.answer is not None
    assert logged.answer["choices"][0]["text"] == "".join(c.choices[0].text for c in chunks if c.choices)


def test_an_embedding_is_logged(server: Server) -> None:
    request_id, headers = ids()
    raw = server.client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one", "two"], extra_headers=headers
    )
    logged = server.logged(request_id)
    assert logged.endpoint == "embeddings"
    assert logged.stream is False
    assert logged.status == 200
    # As the SDK sent it (it asks for base64 and decodes it itself).
    assert logged.request == {"model": "text-embedding-3-small", "input": ["one", "two"], "encoding_format": "base64"}
    assert logged.answer == json.loads(raw.http_response.text)
    assert logged.answer is not None
    assert logged.cost is not None
    assert logged.usage == logged.answer["usage"]


def test_the_pass_through_is_logged_by_its_path(server: Server) -> None:
    request_id, headers = ids()
    server.client.moderations.create(input="a harmless sentence", extra_headers=headers)
    logged = server.logged(request_id)
    assert (logged.endpoint, logged.route, logged.status) == ("/v1/moderations", "passthrough", 200)
    assert logged.request == {"input": "a harmless sentence"}
    assert logged.answer is not None
    assert "results" in logged.answer

    request_id, headers = ids()
    with pytest.raises(openai.NotFoundError):
        server.client.files.retrieve("file-missing", extra_headers=headers)
    logged = server.logged(request_id)
    assert (logged.endpoint, logged.status) == ("/v1/files/file-missing", 404)
    assert logged.error is not None
    assert "file-missing" in logged.error


def test_an_error_is_logged_with_its_message(server: Server) -> None:
    request_id, headers = ids()
    with pytest.raises(openai.BadRequestError):
        server.client.chat.completions.create(model="gpt-4o", messages=[], extra_headers=headers)
    logged = server.logged(request_id)
    assert logged.status == 400
    assert logged.endpoint == "chat.completions"
    assert logged.error is not None
    assert logged.error.startswith("invalid_request_error: ")
    assert logged.answer is not None
    assert "error" in logged.answer


def test_content_is_redacted_before_it_is_kept(server: Server) -> None:
    request_id, headers = ids()
    secret_text = (
        "I am jane.doe@example.org, call +1 415-555-0132, card 4111 1111 1111 1111, "
        f"key sk-proj-{'a1' * 12}, ticket ACME-12345, and the server's {SERVER_KEY}"
    )
    server.client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": secret_text}], extra_headers=headers
    )
    logged = server.logged(request_id)
    assert logged.request is not None
    stored = logged.request["messages"][0]["content"]
    assert stored == (
        "I am [email], call [phone], card [card], key [key], ticket [redacted], and the server's [redacted]"
    )
    raw = server.database.read_bytes() + _wal(server.database)
    for value in ("jane.doe@example.org", "4111 1111 1111 1111", "ACME-12345", SERVER_KEY, CLIENT_KEY):
        assert value.encode() not in raw


def _wal(database: Path) -> bytes:
    wal = database.with_name(database.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_a_rule_that_logs_metadata_keeps_no_content(server: Server) -> None:
    request_id, headers = ids()
    server.client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={**headers, "x-turnout-caller": "quiet-team"}
    )
    logged = server.logged(request_id)
    assert (logged.rule, logged.caller) == ("quiet", "quiet-team")
    assert logged.request is None
    assert logged.answer is None
    assert logged.usage is not None
    assert logged.cost is not None


def test_feedback_over_http(server: Server) -> None:
    request_id, headers = ids()
    server.client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    url = f"{server.process.origin}/v1/turnout/feedback"
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    # Right after the answer: the exchange may still be queued; the endpoint writes it first.
    sent = {"request_id": request_id, "score": 0.9, "label": "good", "comment": "exactly right"}
    answer = httpx.post(url, json=sent, headers=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"object": "turnout.feedback", **sent}
    again = httpx.post(url, json={"request_id": request_id, "label": "great"}, headers=auth, timeout=10)
    assert again.json()["label"] == "great"
    assert again.json()["score"] == 0.9
    logged = server.logged(request_id)
    assert (logged.score, logged.label, logged.comment) == (0.9, "great", "exactly right")

    unknown = httpx.post(url, json={"request_id": "req-never", "score": 1}, headers=auth, timeout=10)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "invalid_request_error"
    assert unknown.json()["error"]["param"] == "request_id"
    for bad in (
        {"request_id": request_id, "score": "high"},
        {"request_id": 7, "score": 1},
        {"request_id": request_id},
        {"request_id": request_id, "score": 1, "stars": 5},
        {"score": 1},
    ):
        refused = httpx.post(url, json=bad, headers=auth, timeout=10)
        assert refused.status_code == 400, (bad, refused.text)
        assert refused.json()["error"]["type"] == "invalid_request_error"
    not_json = httpx.post(url, content=b"{nope", headers=auth, timeout=10)
    assert not_json.status_code == 400
    wrong_method = httpx.get(url, headers=auth, timeout=10)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"


def test_feedback_from_the_cli(server: Server, simulator: RunningProcess) -> None:
    request_id, headers = ids()
    server.client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    server.logged(request_id)
    env = turnout_env(simulator)
    done = turnout_cli("feedback", request_id, "--score", "-1", "--label", "wrong", "--store", server.url, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"request_id": request_id, "score": -1.0, "label": "wrong", "comment": None}
    assert server.logged(request_id).label == "wrong"
    unknown = turnout_cli("feedback", "req-never", "--score", "1", "--store", server.url, env=env)
    assert unknown.returncode == 1
    assert "req-never" in unknown.stderr


def test_the_metrics_count_what_was_written(server: Server) -> None:
    request_id, headers = ids()
    server.client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=headers)
    server.logged(request_id)
    text = httpx.get(f"{server.process.origin}/metrics", timeout=10).text
    written = next(line for line in text.splitlines() if line.startswith("turnout_traffic_written_total"))
    assert float(written.split()[-1]) >= 1
    assert 'turnout_traffic_dropped_total{reason="full"} 0.0' in text
    assert "turnout_traffic_queue_depth" in text
