"""The admin HTTP API: the `turnout keys` operations over HTTP, for a platform team's tooling.

Off unless `TURNOUT_ADMIN_KEY` is set (every `/admin/` path is then a 404, as any unknown URL); with it,
every call needs `Authorization: Bearer <admin key>`, compared in constant time, and failed attempts count
against the client's address like failed key checks (`proxy.access`). The operations and their JSON are
`proxy.auth.operations`', the CLI's own, so the two cannot differ:

- `GET /admin/keys`: every key (`{"object": "list", "data": [...]}`), never a digest nor a key;
- `POST /admin/keys` `{"name", "team", "routes", "models", "rpm", "tpm", "budget_usd", "period", "expires_at"}`:
  201, the new key's record with its `key`, shown this once;
- `GET /admin/keys/{name}`, `DELETE /admin/keys/{name}` (revokes it: every replica refuses it within
  `auth.refresh` seconds);
- `GET /admin/usage?since=ISO-DATE&key=NAME`: spend by key and route (default: since the month began).
"""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from proxy.access import Access
from proxy.auth.keys import KeySpecError
from proxy.auth.operations import create_key, key_usage, list_keys, record_json, revoke_key, show_key, usage_json
from proxy.auth.store import KeyExistsError, KeyNotFoundError
from proxy.lifespan import Resources
from proxy.wire.errors import InvalidRequestError, NotFoundError, ProxyError

__all__ = ["ADMIN_HANDLERS"]

_Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class _NewKey(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: _Name
    team: _Name | None = None
    routes: list[str] | None = None
    models: list[str] | None = None
    rpm: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tpm: Annotated[int, msgspec.Meta(ge=1)] | None = None
    budget_usd: str | float | None = None
    period: Literal["day", "month"] | None = None
    expires_at: str | None = None
    """An ISO 8601 date (that day's midnight, UTC) or time (UTC without an offset)."""


def _access(request: Request[Any, Any, State]) -> Access:
    """The admin API's `Access`, once the caller proved it holds the admin key; else the error to answer."""
    resources: Resources | None = request.app.state.get("resources")
    access = resources.access if resources is not None else None
    if access is None or not access.admin_enabled:
        raise NotFoundError(f"Invalid URL ({request.method} {request.url.path})")
    access.check_admin(request.scope)
    return access


def _json(body: object, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def _budget(value: str | float | None) -> Decimal | None:
    if value is None:
        return None
    try:
        budget = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRequestError("budget_usd must be a number of USD.", param="budget_usd") from None
    if not budget.is_finite() or budget <= 0:
        raise InvalidRequestError("budget_usd must be more than 0.", param="budget_usd")
    return budget


def _moment(text: str | None, param: str) -> datetime.datetime | None:
    """An ISO 8601 date or time as a UTC datetime (a date: its midnight; no offset: UTC)."""
    if not text:
        return None
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"{param} must be an ISO 8601 date or time.", param=param) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)


@get("/admin/keys", name="admin_list_keys")
async def admin_list_keys(request: Request[Any, Any, State]) -> Response[bytes]:
    """Every key (revoked and expired included, with their state)."""
    access = _access(request)
    keys = await list_keys(access.database)
    return _json({"object": "list", "data": [record_json(key) for key in keys]})


@post("/admin/keys", name="admin_create_key")
async def admin_create_key(request: Request[Any, Any, State]) -> Response[bytes]:
    """Create a key; its text is in this answer only."""
    access = _access(request)
    try:
        spec = msgspec.json.decode(await request.body(), type=_NewKey)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"Invalid key: {exc}") from None
    except msgspec.DecodeError:
        raise InvalidRequestError("The body is not valid JSON.") from None
    try:
        record, key = await create_key(
            access.database,
            spec.name,
            team=spec.team,
            routes=spec.routes,
            models=spec.models,
            rpm=spec.rpm,
            tpm=spec.tpm,
            budget_usd=_budget(spec.budget_usd),
            period=spec.period,
            expires_at=_moment(spec.expires_at, "expires_at"),
        )
    except KeySpecError as exc:
        raise InvalidRequestError(f"Invalid key: {exc}") from None
    except KeyExistsError:
        raise ProxyError(f"A key named '{spec.name}' exists already.", code="key_exists", status_code=409) from None
    await access.keyring.refresh()  # this replica knows it at once (the others at their next look)
    return _json({**record_json(record), "key": key}, status=201)


@get("/admin/keys/{name:str}", name="admin_show_key")
async def admin_show_key(request: Request[Any, Any, State], name: FromPath[str]) -> Response[bytes]:
    """One key."""
    access = _access(request)
    try:
        return _json(record_json(await show_key(access.database, name)))
    except KeyNotFoundError:
        raise NotFoundError(f"No key named '{name}'.") from None


@delete("/admin/keys/{name:str}", name="admin_revoke_key", status_code=200)
async def admin_revoke_key(request: Request[Any, Any, State], name: FromPath[str]) -> Response[bytes]:
    """Revoke a key: every replica refuses it within `auth.refresh` seconds."""
    access = _access(request)
    try:
        record, revoked = await revoke_key(access.database, name)
    except KeyNotFoundError:
        raise NotFoundError(f"No key named '{name}'.") from None
    await access.keyring.refresh()
    return _json({**record_json(record), "revoked": revoked})


@get("/admin/usage", name="admin_usage")
async def admin_usage(request: Request[Any, Any, State]) -> Response[bytes]:
    """Spend by key and route since `since` (default: the start of the month), of one `key` or all."""
    access = _access(request)
    since, key = _moment(request.query_params.get("since"), "since"), request.query_params.get("key")
    try:
        rows = await key_usage(access.database, key, since=since)
    except KeyNotFoundError:
        raise NotFoundError(f"No key named '{key}'.") from None
    return _json({"object": "list", "data": usage_json(rows)})


ADMIN_HANDLERS = (admin_list_keys, admin_create_key, admin_show_key, admin_revoke_key, admin_usage)
