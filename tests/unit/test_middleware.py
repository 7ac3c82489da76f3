"""`proxy.middleware.RequestIdMiddleware`, driven as raw ASGI with a tiny app and fake receive/send."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.middleware import REQUEST_ID_HEADER, RequestIdMiddleware, request_id_of


class RecordingApp:
    """A raw ASGI app that answers 200 and remembers the scope and the id the middleware gave it."""

    def __init__(self) -> None:
        self.scopes: list[Any] = []
        self.sends: list[Any] = []
        self.request_ids: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        self.sends.append(send)
        if scope["type"] != "http":
            return
        self.request_ids.append(request_id_of(scope))
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok", "more_body": False})


async def receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


def http_scope(*headers: tuple[bytes, bytes]) -> Any:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"host", b"turnout"), *headers],
    }


async def call(middleware: RequestIdMiddleware, scope: Any) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def echoed_id(sent: list[Any]) -> bytes:
    start = sent[0]
    assert start["type"] == "http.response.start"
    ids = [value for name, value in start["headers"] if name == b"x-request-id"]
    assert len(ids) == 1
    value: bytes = ids[0]
    return value


def test_header_name():
    assert REQUEST_ID_HEADER == "x-request-id"


@pytest.mark.parametrize(
    "client_id",
    [b"abc-123", b"9f1c2d3e-4b5a-6789-abcd-ef0123456789", b"trace:span.1_2", b"x", b"a" * 128],
)
async def test_a_valid_client_id_is_kept_and_echoed(client_id):
    app = RecordingApp()
    sent = await call(RequestIdMiddleware(app), http_scope((b"x-request-id", client_id)))
    assert echoed_id(sent) == client_id
    assert app.request_ids == [client_id.decode()]


async def test_the_response_keeps_its_own_headers_and_body():
    sent = await call(RequestIdMiddleware(RecordingApp()), http_scope((b"x-request-id", b"abc")))
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-request-id", b"abc")],
        },
        {"type": "http.response.body", "body": b"ok", "more_body": False},
    ]


@pytest.mark.parametrize(
    "client_id",
    [
        b"has spaces in it",
        b"a" * 129,
        b"b" * 200,
        b"caf\xc3\xa9",
        b"\xff\xfe",
        b"",
        b"id\r\nx-injected: 1",
        b"<script>",
    ],
)
async def test_an_invalid_client_id_is_replaced(client_id):
    app = RecordingApp()
    sent = await call(RequestIdMiddleware(app), http_scope((b"x-request-id", client_id)))
    echoed = echoed_id(sent)
    assert echoed != client_id
    assert echoed.startswith(b"req_")
    assert app.request_ids == [echoed.decode()]


async def test_generated_ids_differ_and_start_with_req():
    app = RecordingApp()
    middleware = RequestIdMiddleware(app)
    first = echoed_id(await call(middleware, http_scope()))
    second = echoed_id(await call(middleware, http_scope((b"user-agent", b"x"))))
    assert first != second
    assert first.startswith(b"req_")
    assert second.startswith(b"req_")
    assert app.request_ids == [first.decode(), second.decode()]


async def test_generated_ids_are_themselves_valid_client_ids():
    middleware = RequestIdMiddleware(RecordingApp())
    generated = echoed_id(await call(middleware, http_scope()))
    assert echoed_id(await call(middleware, http_scope((b"x-request-id", generated)))) == generated


async def test_two_middleware_instances_generate_different_ids():
    first = echoed_id(await call(RequestIdMiddleware(RecordingApp()), http_scope()))
    second = echoed_id(await call(RequestIdMiddleware(RecordingApp()), http_scope()))
    assert first != second


async def test_request_id_of_returns_what_was_echoed():
    app = RecordingApp()
    scope = http_scope()
    sent = await call(RequestIdMiddleware(app), scope)
    assert request_id_of(scope) == echoed_id(sent).decode()
    assert app.request_ids == [request_id_of(scope)]


async def test_existing_scope_state_is_kept():
    scope = http_scope((b"x-request-id", b"abc"))
    scope["state"] = {"other": 1}
    await call(RequestIdMiddleware(RecordingApp()), scope)
    assert scope["state"]["other"] == 1
    assert request_id_of(scope) == "abc"


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "websocket", "path": "/ws", "headers": [(b"x-request-id", b"abc")]},
        {"type": "lifespan"},
    ],
)
async def test_non_http_scopes_pass_through_untouched(scope):
    app = RecordingApp()
    before = dict(scope)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await RequestIdMiddleware(app)(scope, receive, send)
    assert app.scopes == [scope]
    assert app.scopes[0] is scope
    assert app.sends == [send]
    assert scope == before
    assert "state" not in scope
