"""How the SQL stores (SQLite, PostgreSQL) write an `Exchange` as a row and read it back: one column list for both.

JSON fields (`fallbacks`, `usage`, `request`, `answer`) are encoded here with msgspec, in the writer, never on
the request path. Money goes in as the database's exact type; times as the database's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from proxy.traffic.record import Exchange

__all__ = [
    "COLUMNS",
    "METADATA_COLUMNS",
    "PAGE",
    "decode_row",
    "encode_row",
    "filters",
    "json_text",
    "page_query",
    "select",
]

METADATA_COLUMNS = (
    "request_id",
    "at",
    "endpoint",
    "stream",
    "caller",
    "team",
    "route",
    "rule",
    "reason",
    "model",
    "fallbacks",
    "status",
    "error",
    "cache",
    "usage",
    "cost",
    "baseline",
    "savings",
    "latency_ms",
    "ttfb_ms",
    "score",
    "label",
    "comment",
)
"""Every column but the content ones, in the order `encode_row` gives them."""
COLUMNS = (*METADATA_COLUMNS, "request", "answer")

_ENCODER = msgspec.json.Encoder(decimal_format="number")
_DECODER = msgspec.json.Decoder()


def json_text(value: Any) -> str | None:
    """`value` as JSON text (None stays None)."""
    return None if value is None else _ENCODER.encode(value).decode()


def _json(value: Any) -> Any:
    if value is None or isinstance(value, dict | list):  # PostgreSQL's JSONB arrives decoded
        return value
    return _DECODER.decode(value)


def encode_row(
    exchange: Exchange, time: Callable[[float], Any], money: Callable[[Decimal], Any], json: Callable[[Any], Any]
) -> tuple[Any, ...]:
    """The values of COLUMNS for `exchange`.

    `time`, `money` and `json` turn times, Decimals and JSON values into what the database takes.
    """

    def cash(value: Decimal | None) -> Any:
        return None if value is None else money(value)

    def doc(value: Any) -> Any:
        return None if value is None else json(value)

    e = exchange
    return (
        e.request_id,
        time(e.at),
        e.endpoint,
        e.stream,
        e.caller,
        e.team,
        e.route,
        e.rule,
        e.reason,
        e.model,
        json(list(e.fallbacks)),
        e.status,
        e.error,
        e.cache,
        doc(e.usage),
        cash(e.cost),
        cash(e.baseline),
        cash(e.savings),
        e.latency_ms,
        e.ttfb_ms,
        e.score,
        e.label,
        e.comment,
        doc(e.request),
        doc(e.answer),
    )


def decode_row(row: Sequence[Any], time: Callable[[Any], float]) -> Exchange:
    """The exchange of a row of METADATA_COLUMNS (and, when the row is longer, the content columns)."""
    (request_id, at, endpoint, stream, caller, team, route, rule, reason, model, fallbacks, status, error, cache) = row[
        :14
    ]
    (usage, cost, baseline, savings, latency_ms, ttfb_ms, score, label, comment) = row[14:23]
    request, answer = (row[23], row[24]) if len(row) > len(METADATA_COLUMNS) else (None, None)
    return Exchange(
        request_id=request_id,
        at=time(at),
        endpoint=endpoint,
        stream=bool(stream),
        caller=caller,
        team=team,
        route=route,
        rule=rule,
        reason=reason,
        model=model,
        fallbacks=tuple(_json(fallbacks) or ()),
        status=int(status),
        error=error,
        cache=cache,
        usage=_json(usage),
        cost=None if cost is None else Decimal(cost),
        baseline=None if baseline is None else Decimal(baseline),
        savings=None if savings is None else Decimal(savings),
        latency_ms=latency_ms,
        ttfb_ms=ttfb_ms,
        request=_json(request),
        answer=_json(answer),
        score=score,
        label=label,
        comment=comment,
    )


PAGE = 500
"""Rows a database store reads at a time."""


def select(with_content: bool) -> str:
    """The columns to read: all, or all but the content."""
    return ", ".join(COLUMNS if with_content else METADATA_COLUMNS)


def filters(
    mark: str,
    time: Callable[[float], Any],
    since: float | None,
    until: float | None,
    route: str | None,
    rule: str | None,
) -> tuple[list[str], list[Any]]:
    """The WHERE clauses (with the dialect's parameter `mark`, `?` or `%s`) and their parameters."""
    clauses: list[str] = []
    parameters: list[Any] = []
    for clause, value in (
        ("at >= ", None if since is None else time(since)),
        ("at < ", None if until is None else time(until)),
        ("route = ", route),
        ("rule = ", rule),
    ):
        if value is not None:
            clauses.append(clause + mark)
            parameters.append(value)
    return clauses, parameters


def page_query(
    mark: str, with_content: bool, clauses: Sequence[str], parameters: Sequence[Any], after: tuple[Any, Any] | None
) -> tuple[str, list[Any]]:
    """One page of the matching exchanges in time order, after `after` (the last page's last `(at, request_id)`)."""
    where, values = list(clauses), list(parameters)
    if after is not None:
        where.append(f"(at, request_id) > ({mark}, {mark})")
        values += after
    query = (
        f"SELECT {select(with_content)} FROM turnout_traffic"  # noqa: S608 - constant columns
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY at, request_id LIMIT {PAGE}"
    )
    return query, values
