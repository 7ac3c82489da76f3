"""Issue 11, point 1, through the real server: a client cannot steer Turnout's key to another upstream path.

Without a policy, `GET /v1/models/{id}` asks the upstream. The id used to be decoded into the upstream
URL, so `..%2f..%2fv1%2forganization%2fadmin_api_keys%3flimit=100` reached the upstream as that path
and query with Turnout's key. The requests here go out on a raw socket, exactly as written (an HTTP
client would normalise some of them), to a recording upstream on loopback.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.conftest import RunningProcess, clean_env, free_port, sdk_client, start_process
from tests.e2e.hostile import HostileUpstream, hostile_upstream
from tests.openapi import validate

KEY = f"abc123XYZ-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileUpstream]:
    with hostile_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def proxied(hostile: HostileUpstream) -> Iterator[RunningProcess]:
    """Turnout without a policy file, forwarding to the recording upstream with `KEY`."""
    env = clean_env(OPENAI_BASE_URL=hostile.base_url, OPENAI_API_KEY=KEY)
    port = free_port()
    process = start_process("turnout", ["serve", "--port", str(port)], env, port)
    try:
        process.wait_ready("/healthz")
        yield process
        process.stop()
        assert KEY not in process.stderr()
    finally:
        process.close()


def raw_get(port: int, target: str) -> tuple[int, dict[str, Any]]:
    """Send `GET target` byte for byte and return the status and the JSON body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: turnout\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


ATTACKS = [
    "/v1/models/..%2f..%2fv1%2forganization%2fadmin_api_keys%3flimit=100",  # the issue's own
    "/v1/models/..%2F..%2Forganization%2Fadmin_api_keys",
    "/v1/models/%2e%2e%2f%2e%2e%2forganization%2fadmin_api_keys",
    "/v1/models/%2e%2e/%2e%2e/organization/admin_api_keys",
    "/v1/models/../../organization/admin_api_keys",
    "/v1/models/..",
    "/v1/models/%2e%2e",
    "/v1/models/.",
    "/v1/models/gpt-4o%2f..%2f..%2fusage",
    "/v1/models/gpt-4o%5c..%5c..%5cusage",
    "/models/..%2forganization%2fadmin_api_keys",
    "/v1/models/gpt%00-4o",
]


@pytest.mark.parametrize("target", ATTACKS)
def test_a_model_id_that_leaves_the_models_endpoint_is_a_404_and_never_an_upstream_call(
    proxied: RunningProcess, hostile: HostileUpstream, target: str
) -> None:
    hostile.received.clear()
    status, body = raw_get(proxied.port, target)

    assert status == 404
    validate("ErrorResponse", body)
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == "model"
    assert KEY not in json.dumps(body)
    assert hostile.targets() == []


@pytest.mark.parametrize(
    ("target", "sent", "model"),
    [
        # `?`, `#`, `;`, `&` and `=` are data inside the one segment, never a query or a path parameter.
        ("/v1/models/gpt-4o%3flimit=100", "/v1/models/gpt-4o%3Flimit%3D100", "gpt-4o?limit=100"),
        ("/v1/models/gpt-4o%23x", "/v1/models/gpt-4o%23x", "gpt-4o#x"),
        ("/v1/models/gpt-4o;..", "/v1/models/gpt-4o%3B..", "gpt-4o;.."),
        ("/v1/models/gpt-4o%26a%3Db", "/v1/models/gpt-4o%26a%3Db", "gpt-4o&a=b"),
        ("/v1/models/gpt-4o?limit=100&after=x", "/v1/models/gpt-4o", "gpt-4o"),  # the caller's query stays behind
    ],
)
def test_query_characters_in_a_model_id_stay_inside_its_one_segment(
    proxied: RunningProcess, hostile: HostileUpstream, target: str, sent: str, model: str
) -> None:
    hostile.received.clear()
    status, body = raw_get(proxied.port, target)

    assert status == 200
    assert body["id"] == model
    assert hostile.targets() == [sent]


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini",
        "gpt-4.1",
        "o1-preview",
        "text-embedding-3-small",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "ft:gpt-3.5-turbo-0613:personal:recipe-ner:8Xyz",
        "curie:ft-acme-inc-2022-02-26-21-34-05",
    ],
)
def test_real_openai_model_ids_are_retrieved_as_sent(
    proxied: RunningProcess, hostile: HostileUpstream, model: str
) -> None:
    hostile.received.clear()
    with sdk_client(proxied.origin) as sdk:
        retrieved = sdk.models.retrieve(model)

    assert retrieved.id == model
    assert hostile.targets() == [f"/v1/models/{model}"]  # `:` and `.` unencoded, as the SDK sends them
    assert hostile.received[0].authorization == f"Bearer {KEY}"


def test_the_sdk_gets_not_found_for_a_traversing_id(proxied: RunningProcess, hostile: HostileUpstream) -> None:
    hostile.received.clear()
    with sdk_client(proxied.origin) as sdk, pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("../organization/admin_api_keys")
    assert hostile.targets() == []
