"""Embeddings and legacy completions through the real server, as the official SDK sees them.

Without a policy both go to the one upstream; with one, to the route serving them for the model asked,
else to the default upstream. Answers are relayed unchanged (base64 vectors included, which the SDK asks
for by default and decodes), cached, priced and counted in the metrics like chat.

The SDK's strict validation checks an answer before it decodes base64 vectors, and types them as floats:
the strict clients ask for floats, and a lenient one shows the SDK's own default (base64, decoded).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.accounting.cost import cost_usd
from proxy.wire.schemas import Usage
from tests.e2e.conftest import (
    CLIENT_KEY,
    RunningProcess,
    SimulatorCalls,
    new_request_id,
    running,
    sdk_client,
    start_turnout,
    turnout_env,
)
from tests.e2e.test_chat import wait_for_log_line
from tests.openapi import validate

EMBEDDER = "text-embedding-3-small"
INSTRUCT = "gpt-3.5-turbo-instruct"
POLICY = """
upstreams:
  sim: {base_url: "${SIM_URL}", api_key: "${OPENAI_API_KEY}"}
routes:
  gpt4: {upstream: sim, model: gpt-4}
  vectors: {upstream: sim, model: text-embedding-3-large, endpoints: [embeddings]}
rules:
  - name: default
    route: gpt4
"""


def sample(origin: str, name: str, **labels: str) -> float:
    """The value of one metric sample on Turnout's `/metrics` (0 when it has none yet)."""
    text = httpx.get(f"{origin}/metrics", timeout=5.0).text
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return float(found.value)
    return 0.0


@pytest.fixture
def lenient(turnout: RunningProcess) -> Iterator[openai.OpenAI]:
    """The SDK without strict validation: as applications use it (base64 vectors are validated after decoding)."""
    with openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{turnout.origin}/v1", max_retries=0) as sdk:
        yield sdk


def test_embeddings_of_a_string_and_of_a_list(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model=EMBEDDER, input="When is support open?", encoding_format="float")
    texts = ["When is support open?", "Where is my order?"]
    many = client.embeddings.create(model=EMBEDDER, input=texts, encoding_format="float")
    assert len(one.data) == 1
    assert len(one.data[0].embedding) == 1536
    assert [datum.index for datum in many.data] == [0, 1]
    assert many.data[0].embedding == one.data[0].embedding  # the same text, the same vector
    assert many.usage.prompt_tokens > one.usage.prompt_tokens > 0


def test_token_arrays_and_dimensions(client: openai.OpenAI, simulator_call: SimulatorCalls) -> None:
    request_id = new_request_id()
    tokens = client.embeddings.create(
        model=EMBEDDER,
        input=[[1734, 374], [5018]],
        dimensions=64,
        encoding_format="float",
        extra_headers={"x-request-id": request_id},
    )
    assert [len(datum.embedding) for datum in tokens.data] == [64, 64]
    assert simulator_call(request_id)["body"]["input"] == [[1734, 374], [5018]]  # forwarded as sent
    single = client.embeddings.create(model=EMBEDDER, input=[1734, 374], dimensions=64, encoding_format="float")
    assert single.data[0].embedding == tokens.data[0].embedding


def test_base64_is_relayed_unchanged_and_the_sdk_decodes_it(client: openai.OpenAI, lenient: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(
        model=EMBEDDER, input="When is support open?", dimensions=8, encoding_format="base64"
    )
    encoded = json.loads(raw.http_response.text)["data"][0]["embedding"]
    assert isinstance(encoded, str)
    floats = list(struct.unpack("<8f", base64.b64decode(encoded)))  # little-endian float32, as OpenAI sends
    as_floats = client.embeddings.with_raw_response.create(
        model=EMBEDDER, input="When is support open?", dimensions=8, encoding_format="float"
    )
    body = json.loads(as_floats.http_response.text)
    validate("CreateEmbeddingResponse", body)
    assert floats == pytest.approx(body["data"][0]["embedding"], abs=1e-6)
    default = lenient.embeddings.create(model=EMBEDDER, input="When is support open?", dimensions=8)  # base64 asked
    assert default.data[0].embedding == pytest.approx(floats)


def test_an_embedding_is_cached_priced_and_counted(client: openai.OpenAI, turnout: RunningProcess) -> None:
    labels = {"route": "openai", "model": EMBEDDER}
    requests_before = sample(turnout.origin, "turnout_requests_total", cache="hit", **labels)
    tokens_before = sample(turnout.origin, "turnout_tokens_total", kind="prompt", **labels)
    text = f"cache me {time.time_ns()}"
    first = client.embeddings.with_raw_response.create(model=EMBEDDER, input=text, encoding_format="float")
    again = client.embeddings.with_raw_response.create(model=EMBEDDER, input=text, encoding_format="float")
    assert (first.headers["x-turnout-cache"], again.headers["x-turnout-cache"]) == ("miss", "hit")
    assert again.http_response.content == first.http_response.content
    usage = first.parse().usage
    assert Decimal(first.headers["x-turnout-cost-usd"]) == cost_usd(EMBEDDER, Usage(prompt_tokens=usage.prompt_tokens))
    assert again.headers["x-turnout-cost-usd"] == "0"
    assert sample(turnout.origin, "turnout_requests_total", cache="hit", **labels) == requests_before + 1
    tokens = sample(turnout.origin, "turnout_tokens_total", kind="prompt", **labels)
    assert tokens == tokens_before + 2 * usage.prompt_tokens  # the hit's tokens count too, as chat's do


def test_a_completion(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model=INSTRUCT, prompt="Say this is a test", max_tokens=5)
    body = json.loads(raw.http_response.text)
    validate("CreateCompletionResponse", body)
    completion = raw.parse()
    assert completion.id.startswith("cmpl-")
    assert completion.object == "text_completion"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert raw.headers["x-turnout-route"] == "openai"
    assert Decimal(raw.headers["x-turnout-cost-usd"]) > 0


def test_a_streamed_completion_ends_with_its_usage(turnout: RunningProcess) -> None:
    # Legacy completion chunks say `finish_reason: null` until a choice's last one, as OpenAI sends them; the
    # SDK's strict validation types it as never null, so this client reads them without it. Each chunk that
    # names its finish reason is checked against OpenAI's schema.
    with openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{turnout.origin}/v1", max_retries=0) as sdk:
        chunks = list(
            sdk.completions.create(
                model=INSTRUCT, prompt=["One", "Two"], n=2, stream=True, stream_options={"include_usage": True}
            )
        )
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason is not None:
                validate("CreateCompletionResponse", chunk.model_dump(exclude_unset=True))
    assert sorted(texts) == [0, 1, 2, 3]
    assert all(texts.values())
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_a_completion_is_cached_and_a_hit_replays_as_a_stream(client: openai.OpenAI) -> None:
    prompt = f"Cache this {time.time_ns()}"
    first = client.completions.with_raw_response.create(model=INSTRUCT, prompt=prompt, temperature=0)
    assert first.headers["x-turnout-cache"] == "miss"
    with client.completions.with_streaming_response.create(
        model=INSTRUCT, prompt=prompt, temperature=0, stream=True
    ) as streamed:
        assert streamed.headers["x-turnout-cache"] == "hit"
        chunks = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == first.parse().choices[0].text


def test_a_client_that_times_out_takes_its_completion_with_it(
    client: openai.OpenAI, turnout: RunningProcess, simulator_call: SimulatorCalls
) -> None:
    request_id = new_request_id()
    impatient = client.with_options(timeout=0.5, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(
            model=INSTRUCT,
            prompt="Take your time.",
            extra_headers={"x-request-id": request_id, "x-simulated-latency-ms": "20000"},
        )
    gave_up_at = time.time()
    record = simulator_call.wait_for(request_id, lambda call: call["outcome"] == "cancelled", timeout=5.0)
    assert record is not None
    assert record["outcome"] == "cancelled", record
    assert record["cancelled_at"] - gave_up_at < 1.0
    assert wait_for_log_line(turnout, request_id)["status"] == 499


@pytest.fixture(scope="module")
def routed(simulator: RunningProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    policy = Path(tmp_path_factory.mktemp("policy")) / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    env = turnout_env(simulator, TURNOUT_CONFIG=str(policy), SIM_URL=f"{simulator.origin}/v1")
    with running(start_turnout(env)) as process:
        client = sdk_client(process.origin)
        yield client
        client.close()


def test_a_policy_route_serving_embeddings_is_chosen_by_model(
    routed: openai.OpenAI, simulator_call: SimulatorCalls
) -> None:
    request_id = new_request_id()
    raw = routed.embeddings.with_raw_response.create(
        model="text-embedding-3-large", input="Hi", encoding_format="float", extra_headers={"x-request-id": request_id}
    )
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == ("vectors", "model")
    assert raw.parse().data[0].embedding
    named = routed.embeddings.with_raw_response.create(model="vectors", input="Hi", encoding_format="float")
    assert named.headers["x-turnout-route"] == "vectors"
    assert named.parse().model == "text-embedding-3-large"  # the route's model, asked of the upstream
    validate("CreateEmbeddingResponse", json.loads(named.http_response.text))


def test_without_a_route_for_it_the_default_upstream_answers(routed: openai.OpenAI) -> None:
    raw = routed.embeddings.with_raw_response.create(model=EMBEDDER, input="Hi", encoding_format="float")
    assert (raw.headers["x-turnout-route"], raw.headers["x-turnout-rule"]) == ("sim", "default")
    assert raw.parse().model == EMBEDDER
    completion = routed.completions.with_raw_response.create(model=INSTRUCT, prompt="Hi")
    assert completion.headers["x-turnout-route"] == "sim"
    listed = [model.id for model in routed.models.list()]
    # The routes first, then the upstream's own models (issue 13's model list); `sim` is no configured route.
    assert listed[:2] == ["gpt4", "vectors"]
    assert "sim" not in listed


def test_a_named_route_that_serves_no_embeddings_is_a_400(routed: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        routed.embeddings.create(model="gpt4", input="Hi")
    assert caught.value.code == "unsupported_endpoint"


def test_bad_input_is_a_400(client: openai.OpenAI) -> None:
    bad: Any = [1, "mixed"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDER, input=bad)
    assert caught.value.param == "input"
