"""What a handler under `/v1/` does not serve (another method, a deeper path) is the upstream's to answer, never a 405.

`GET /v1/chat/completions` lists OpenAI's stored chat completions, `DELETE /v1/models/{id}` deletes a fine-tuned
model, `POST /v1/responses/input_tokens` counts tokens: Turnout routes none of them, but a client whose
`base_url` is Turnout calls them. The simulator has none of them either: it answers OpenAI's 404 and records
the call, which shows that the request reached it, with Turnout's key.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from routes.simulator.server import SimulatorServer
from tests.conftest import UPSTREAM_KEY, upstream_call

NOT_SERVED = [
    ("GET", "/v1/chat/completions"),
    ("OPTIONS", "/v1/chat/completions"),
    ("GET", "/v1/chat/completions/chatcmpl-1"),
    ("POST", "/v1/chat/completions/chatcmpl-1"),
    ("DELETE", "/v1/chat/completions/chatcmpl-1"),
    ("GET", "/v1/chat/completions/chatcmpl-1/messages"),
    ("GET", "/v1/embeddings"),
    ("PUT", "/v1/completions"),
    ("GET", "/v1/responses"),
    ("POST", "/v1/responses/input_tokens"),
    ("POST", "/v1/responses/compact"),
    ("PATCH", "/v1/responses/resp_1"),
    ("POST", "/v1/responses/resp_1/input_items"),
    ("GET", "/v1/responses/resp_1/cancel"),
    ("GET", "/v1/responses/resp_1/something/new"),
    ("POST", "/v1/models"),
    ("DELETE", "/v1/models/ft:gpt-4o-mini:acme::abc"),
]


@pytest.mark.parametrize(("method", "path"), NOT_SERVED)
async def test_what_no_handler_serves_under_v1_reaches_the_upstream(
    client: httpx.AsyncClient, simulator: SimulatorServer, method: str, path: str
) -> None:
    request_id = f"not-served-{uuid.uuid4().hex}"
    body = b'{"model": "gpt-4o-mini", "input": "Hi"}' if method in ("POST", "PUT", "PATCH") else None
    response = await client.request(method, path, content=body, headers={"x-request-id": request_id})

    assert response.status_code == 404, response.text
    assert response.json() == {
        "error": {
            "message": f"Invalid URL ({method} {path})",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    record = await upstream_call(simulator, request_id)
    assert (record["path"], record["outcome"]) == (path, "not_found")
    assert record["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/chat/completions", 405, "POST"),
        ("POST", "/models", 405, "GET"),
        ("DELETE", "/models/gpt-4o", 405, "GET"),
        ("POST", "/responses/input_tokens", 404, None),
    ],
)
async def test_outside_v1_a_method_not_served_stays_turnout_s_own_error(
    client: httpx.AsyncClient, simulator: SimulatorServer, method: str, path: str, status: int, allow: str | None
) -> None:
    request_id = f"not-served-{uuid.uuid4().hex}"
    response = await client.request(method, path, headers={"x-request-id": request_id})

    assert response.status_code == status
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers.get("allow") == allow
    with pytest.raises(httpx.HTTPStatusError):  # the simulator never saw it
        await upstream_call(simulator, request_id)


async def test_the_methods_served_stay_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/models")).json()["object"] == "list"
    assert (await client.get("/v1/models/gpt-4o")).json()["id"] == "gpt-4o"
    created = await client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "Hi"})
    response_id = created.json()["id"]
    assert (await client.get(f"/v1/responses/{response_id}")).json()["id"] == response_id
    assert (await client.get(f"/v1/responses/{response_id}/input_items")).json()["object"] == "list"
    assert (await client.delete(f"/v1/responses/{response_id}")).json()["deleted"] is True
