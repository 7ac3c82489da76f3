"""`POST /v1/turnout/feedback`: a score, a label and a comment attached to a logged exchange by its request id.

The body is `{"request_id": "...", "score": 0.9, "label": "good", "comment": "..."}` (at least one of the last
three; a field left out keeps what the exchange had). It is authorised as every `/v1/` request is (with
`auth: keys`, a Turnout key, and then only an exchange of that key, or of its team, can be found). An unknown
id is a 404, a bad body a 400, both in OpenAI's error format; the traffic log off is a 404 too. An exchange
still waiting in the log's queue is written first, so feedback sent right after its answer finds it.
"""

from __future__ import annotations

from typing import Annotated, cast

import msgspec
from litestar import asgi
from litestar.handlers import ASGIRouteHandler
from litestar.types import HTTPScope, Receive, Scope, Send

from proxy.asgi import ClientDisconnectedError, read_body, send_json
from proxy.gate import identity_of
from proxy.lifespan import Resources
from proxy.traffic.store import TrafficStoreError
from proxy.wire.errors import InvalidRequestError, MethodNotAllowedError, NotFoundError, ProxyError

__all__ = ["FEEDBACK_PATH", "FeedbackBody", "feedback"]

FEEDBACK_PATH = "/v1/turnout/feedback"
_MAX_BODY = 64 * 1024


class FeedbackBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The request's body."""

    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    score: float | None = None
    label: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=10_000)] | None = None


_DECODER = msgspec.json.Decoder(FeedbackBody)


def _body(raw: bytes) -> FeedbackBody:
    try:
        body = _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid feedback: {exc}.") from None
    except msgspec.DecodeError:
        raise InvalidRequestError("The body is not valid JSON.") from None
    if body.score is None and body.label is None and body.comment is None:
        raise InvalidRequestError("Give at least one of score, label and comment.")
    return body


async def _feedback(scope: Scope, receive: Receive, send: Send) -> None:
    http = cast("HTTPScope", scope)
    if http["method"] != "POST":
        raise MethodNotAllowedError(
            f"Method {http['method']} is not allowed on {FEEDBACK_PATH}", headers={"allow": "POST"}
        )
    resources: Resources = scope["app"].state.resources
    try:
        raw = await read_body(dict(http["headers"]), receive, _MAX_BODY)
    except ClientDisconnectedError:
        return
    body = _body(raw)
    unknown = NotFoundError(
        f"No exchange with the request id '{body.request_id}' in the traffic log.", param="request_id"
    )
    log = resources.traffic
    if log is None:
        raise NotFoundError("The traffic log is off (traffic: {enabled: true} turns it on).", param="request_id")
    try:
        await log.flush()  # an exchange still queued (its answer just sent) is written first
        exchange = await log.store.get(body.request_id, with_content=False)
        identity = identity_of(scope)
        if exchange is None or (
            identity is not None
            and exchange.caller != identity.key.name
            and (identity.key.team is None or exchange.team != identity.key.team)
        ):
            raise unknown
        if not await log.store.feedback(body.request_id, score=body.score, label=body.label, comment=body.comment):
            raise unknown
        exchange = await log.store.get(body.request_id, with_content=False)
    except TrafficStoreError as exc:
        message = "The traffic log's store failed; try again."
        raise ProxyError(message, code="traffic_store_error", status_code=503) from exc
    if exchange is None:
        raise unknown
    answer = {"object": "turnout.feedback", "request_id": exchange.request_id, "score": exchange.score}
    answer |= {"label": exchange.label, "comment": exchange.comment}
    await send_json(send, msgspec.json.encode(answer), [])


feedback: ASGIRouteHandler = asgi([FEEDBACK_PATH], is_mount=False, copy_scope=False, name="turnout_feedback")(_feedback)
"""The handler (every method: another than POST is a 405)."""
