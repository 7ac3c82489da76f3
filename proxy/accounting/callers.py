"""`CallerMetrics`: requests, tokens and spend per key and team, and what the gate refused, with bounded labels.

With `auth: keys`, a request's caller is a checked key (`Tally.keyed`), so its name may be a label; without
keys the caller is whatever a client writes in a header, and never one. The label set stays bounded however
many keys there are: each process gives its own label to the first `top` key names it sees (and the first
`top` teams), and counts every later one as `other`; the admin API's `usage` and `turnout keys usage` have every
key. Defined in the registry of `proxy.accounting.metrics.Metrics` and added up through its `Batch`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from proxy.accounting.batch import Batch, PendingCount
from proxy.accounting.tally import Tally

__all__ = ["OTHER", "CallerMetrics"]

OTHER = "other"
NO_TEAM = ""
_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


class _Bounded:
    """Names as label values: the first `top` seen are themselves, every other is `other`."""

    __slots__ = ("_seen", "_top")

    def __init__(self, top: int) -> None:
        self._top = top
        self._seen: set[str] = set()

    def __call__(self, name: str) -> str:
        if name in self._seen:
            return name
        if len(self._seen) < self._top:
            self._seen.add(name)
            return name
        return OTHER


class CallerMetrics:
    """The per-key and per-team metrics, and the gate's refusals and failures."""

    def __init__(self, registry: CollectorRegistry, batch: Batch, *, top: int = 50) -> None:
        self._batch = batch
        self._key, self._team = _Bounded(top), _Bounded(top)
        self.requests = Counter(
            "turnout_key_requests",
            "Requests by Turnout key and team (auth: keys), by status class.",
            ["key", "team", "status_class"],
            registry=registry,
        )
        self.tokens = Counter(
            "turnout_key_tokens",
            "Tokens the upstream reported for each key's requests, by kind (prompt, completion).",
            ["key", "team", "kind"],
            registry=registry,
        )
        self.spend = Counter(
            "turnout_key_spend_usd",
            "What each key's requests cost, in USD (what its budget counts; cache hits cost nothing).",
            ["key", "team"],
            registry=registry,
        )
        self.refusals = Counter(
            "turnout_limit_refusals",
            "Requests refused by a key's or team's limit: rpm, tpm, budget, or unavailable (limits store down).",
            ["scope", "name", "limit"],
            registry=registry,
        )
        self.soft = Counter(
            "turnout_budget_soft_exceeded",
            "Requests admitted while their key's or team's spend was past the soft share of its budget.",
            ["scope", "name"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "turnout_auth_failures",
            "Requests refused by the gate: missing or invalid key, throttled address, forbidden route or model.",
            ["reason"],
            registry=registry,
        )
        self.limits_fallbacks = Counter(
            "turnout_limits_fallbacks",
            "Requests whose limits this process counted on its own because the limits' Redis did not answer.",
            registry=registry,
        )
        self.ledger_drops = Counter(
            "turnout_ledger_dropped",
            "Spend entries dropped because the ledger's queue was full (the database is too slow or down).",
            registry=registry,
        )
        for reason in ("missing", "invalid", "throttled", "forbidden"):
            self.auth_failures.labels(reason)
        self._children: dict[tuple[int, tuple[str, ...]], PendingCount] = {}

    def _pending(self, metric: Counter, labels: tuple[str, ...]) -> PendingCount:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._batch.count(metric.labels(*labels))
        return child

    def record(self, tally: Tally) -> None:
        """A keyed request has ended: its status, tokens and spend on its key and team."""
        if not tally.keyed or tally.caller is None:
            return
        key, team = self._key(tally.caller), self._team(tally.team) if tally.team else NO_TEAM
        status = _STATUS_CLASSES.get(tally.status // 100, "5xx")
        with self._batch.lock:
            self._pending(self.requests, (key, team, status)).inc()
            usage = tally.usage
            if usage is not None:
                self._pending(self.tokens, (key, team, "prompt")).inc(usage.prompt_tokens)
                self._pending(self.tokens, (key, team, "completion")).inc(usage.completion_tokens)
            cost = tally.cost
            if cost is not None and cost > 0:
                self._pending(self.spend, (key, team)).inc(float(cost))

    def _scope_name(self, scope: str, name: str) -> str:
        return self._key(name) if scope == "key" else self._team(name) if scope == "team" else name

    def refused(self, scope: str, name: str, limit: str) -> None:
        """A limit refused a request."""
        self.refusals.labels(scope, self._scope_name(scope, name), limit).inc()

    def soft_exceeded(self, scope: str, name: str) -> None:
        """A request was admitted past its budget's soft share."""
        self.soft.labels(scope, self._scope_name(scope, name)).inc()

    def auth_failed(self, reason: str) -> None:
        """The gate refused a request: `missing`, `invalid`, `throttled` or `forbidden`."""
        self.auth_failures.labels(reason).inc()

    def limits_fell_back(self) -> None:
        """The limits' Redis is unreachable: this process counts on its own from now on."""
        self.limits_fallbacks.inc()

    def ledger_dropped(self) -> None:
        """A spend entry did not fit in the ledger's queue."""
        self.ledger_drops.inc()
