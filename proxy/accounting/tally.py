"""`Tally`: what one request used, cost and took, filled in along the way and recorded once when it ends.

The middleware creates it and times the response; the chat handler and the pipeline fill in the
decision, the attempts, the usage and the charge; at the end the middleware hands it to the recorder
(the metrics and the access log). It is the one mutable per-request value, and it never leaves its request.

How the response cache and the embedders fill it in:
- a cache lookup: `tally.cache = "hit"` or `"miss"` (it stays `"bypass"` when the cache was not asked);
- a cache hit's saving: `tally.charge_for(prices, model, usage, cached=True, ...)` (costs 0, saves the whole
  baseline cost of the client's request);
- embeddings spent for the request (RAG retrieval, semantic conditions): `tally.embedded(prices, model, tokens)`,
  by the pipeline, from what the request's own `Question` was billed (`routes.knowledge.embedding`); usage
  with no request (a policy's examples, embedded at load) is `priced()` and counted on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from proxy.wire.content import ContentReader
from proxy.wire.endpoint import Body
from proxy.wire.errors import ProxyError
from proxy.wire.schemas import Usage

if TYPE_CHECKING:
    from proxy.accounting.cost import Charge, PriceTable, Tier

__all__ = [
    "CAPTURED_UP_TO",
    "COST_HEADER",
    "ESTIMATED_HEADER",
    "SAVINGS_HEADER",
    "CacheStatus",
    "Embedding",
    "Tally",
    "priced",
    "usd",
]

CacheStatus = Literal["hit", "miss", "bypass"]
"""What the response cache did for a request: a hit, a miss (looked up, not found), or not looked up."""
COST_HEADER = "x-turnout-cost-usd"
SAVINGS_HEADER = "x-turnout-savings-usd"
ESTIMATED_HEADER = "x-turnout-cost-estimated"
"""Present (`true`) when the cost rests on estimated usage: a stream that ended before its upstream reported it."""
CAPTURED_UP_TO = 8 * 1024 * 1024
"""Bytes of a response (or of a passed-through request) kept for the traffic log; a longer one is kept without."""


def usd(amount: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros: `0.00246`, `0`, `-0.0012`."""
    text = f"{amount.normalize():f}"
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True, slots=True)
class Embedding:
    """Embedding tokens spent for a request, and their cost (None: the model has no price)."""

    model: str
    tokens: int
    cost: Decimal | None


@dataclass(slots=True)
class Tally:
    """One request's accounting record (see the module docstring for what fills which field)."""

    request_id: str = ""
    started: float = field(default_factory=time.perf_counter)
    """`time.perf_counter()` when the request arrived."""
    routed: bool = False
    """A request the pipeline routed (chat completions, ...): it carries the cost headers (see also `counted`)."""
    endpoint: str = ""
    """The endpoint kind of a routed request (its codec's `kind`: `chat`, ...), the API family of a passed-through
    one (`files`, ..., `other`: `proxy.passthrough.family_of`); "" for any other request (`/healthz`, ...)."""
    shadow: bool = False
    """A shadow copy, sent in the background: its tokens and cost count, it is no request of its own."""
    caller: str | None = None
    """Who is calling: the key's name with `auth: keys`, else what `x-turnout-caller` says."""
    team: str | None = None
    """The key's team, with `auth: keys`."""
    keyed: bool = False
    """The caller is a checked key (`proxy.gate`), not a header anyone can write: it may be a metric label."""
    stream: bool = False
    request: Body[Any] | None = None
    """The request's body, for the access log's optional content (read by `reader`)."""
    reader: ContentReader[Any] | None = None
    """What reads `request` and `answer` for the access log: the request's codec."""
    answer: bytes | None = None
    """A non-streamed answer's body, for the access log's optional content."""
    route: str | None = None
    rule: str | None = None
    reason: str | None = None
    """Why the rule matched (the policy's `Decision.reason`)."""
    log: str | None = None
    """What the traffic log keeps of the request, as its rule says (`content`, `metadata`; None: the default)."""
    sent: list[bytes] | None = None
    """The response's body as it was sent, chunk by chunk, for the traffic log (None: not kept)."""
    received: list[bytes] | None = None
    """A passed-through request's body as it came, chunk by chunk, for the traffic log (None: not kept)."""
    captured: int = 0
    """Bytes in `sent` and `received`, up to `CAPTURED_UP_TO`."""
    model: str | None = None
    """The model that really answered, as the upstream reported it."""
    model_label: str | None = None
    """`model` as a metric label: a configured or priced model's name, else `other`."""
    cache: CacheStatus = "bypass"
    usage: Usage | None = None
    charge: Charge | None = None
    embeddings: list[Embedding] | None = None
    fallback_from: tuple[str, ...] = ()
    retries: list[str] | None = None
    """The route of each retry."""
    upstream_errors: list[tuple[str, str]] | None = None
    """(route, kind) of each failed upstream attempt."""
    circuits: list[tuple[str, str]] | None = None
    """(route, breaker state) each time a route's breaker may have changed, in order."""
    failure: ProxyError | None = None
    """What broke a response off after it had begun (a stream's upstream failing midway): its status, sent
    before, stays what the client saw."""
    rag: str | None = None
    """The RAG route's `x-turnout-rag` (`no-context`: no passage above its floor, its `no_context` answered)."""
    upstream_seconds: float = 0.0
    """Time spent waiting on upstreams; a stream's answering attempt counts until its first event."""
    answered_at: float | None = None
    """When the answering attempt returned (a stream's first event): its tail runs until `ended_at`."""
    status: int = 0
    first_byte_at: float | None = None
    ended_at: float | None = None

    @property
    def counted(self) -> bool:
        """A request the request metrics count: routed, or passed through (the others are only logged)."""
        return self.routed or bool(self.endpoint)

    def decided(self, route: str, rule: str, reason: str | None = None, log: str | None = None) -> None:
        """The policy's decision (before any fallback), why it was made, and what the traffic log keeps of it."""
        self.route, self.rule, self.reason, self.log = route, rule, reason, log

    def keep_sent(self, body: bytes) -> None:
        """Keep a chunk of the response's body for the traffic log (all of it is dropped past `CAPTURED_UP_TO`)."""
        if self.sent is not None and body:
            self.captured += len(body)
            if self.captured > CAPTURED_UP_TO:
                self.sent = None
            else:
                self.sent.append(body)

    def keep_received(self, body: bytes) -> None:
        """Keep a chunk of a passed-through request's body for the traffic log (as `keep_sent`)."""
        if self.received is not None and body:
            self.captured += len(body)
            if self.captured > CAPTURED_UP_TO:
                self.received = None
            else:
                self.received.append(body)

    def charge_for(
        self,
        prices: PriceTable,
        model: str,
        usage: Usage,
        *,
        cached: bool = False,
        compared: bool = True,
        baseline_usage: Usage | None = None,
        tier: Tier = "standard",
        estimated: bool = False,
    ) -> None:
        """Price `usage` by `model`, which answered (or, `cached`, whose answer came from the cache).

        `compared`: against the baseline (False when the baseline route serves no request of this kind);
        `baseline_usage`: the client's own request as the baseline would have billed it (see `PriceTable.charge`).
        A shadow copy has no baseline: its whole cost is spend that lowers the savings.
        """
        self.model, self.model_label, self.usage = model, prices.label(model), usage
        charge = prices.charge(
            model,
            usage,
            cached=cached,
            compared=compared,
            baseline_usage=baseline_usage,
            tier=tier,
            estimated=estimated,
        )
        if charge is not None and self.shadow:
            charge = replace(charge, baseline=Decimal(0))
        self.charge = charge

    def embedded(self, prices: PriceTable, model: str, tokens: int) -> None:
        """Embedding tokens spent for this request (the RAG path's retrieval, semantic conditions)."""
        embedding = priced(prices, model, tokens)
        if self.embeddings is None:
            self.embeddings = []
        self.embeddings.append(embedding)

    def failed_attempt(self, route: str, error: ProxyError, *, retried: bool) -> None:
        """An attempt on `route` failed with `error` (and is retried on the same route when `retried`)."""
        self.upstream_error(route, error.kind)
        if retried:
            if self.retries is None:
                self.retries = []
            self.retries.append(route)

    def circuit(self, route: str, state: str) -> None:
        """`route`'s breaker is now in `state` (noted when it may have changed: a failure, a recovery)."""
        if self.circuits is None:
            self.circuits = []
        self.circuits.append((route, state))

    def upstream_error(self, route: str, kind: str) -> None:
        """An upstream failure of a fixed `kind` on `route` (`midstream`: a stream broke off after its start)."""
        if self.upstream_errors is None:
            self.upstream_errors = []
        self.upstream_errors.append((route, kind))

    def cost_items(self) -> list[tuple[str, str]]:
        """`x-turnout-cost-usd` and `x-turnout-savings-usd` with their values, once the cost is known."""
        cost, savings = self.cost, self.savings
        if cost is None or savings is None:
            return []
        items = [(COST_HEADER, usd(cost)), (SAVINGS_HEADER, usd(savings))]
        if self.estimated:
            items.append((ESTIMATED_HEADER, "true"))
        return items

    @property
    def cost(self) -> Decimal | None:
        """What the request cost in USD: its answer and its embeddings; None while unknown or unpriced."""
        if self.charge is None:
            return None
        total = self.charge.cost
        for embedding in self.embeddings or ():
            total += embedding.cost or 0
        return total

    @property
    def baseline(self) -> Decimal | None:
        """What the client's own request would have cost on the baseline route; None while unknown."""
        return None if self.charge is None else self.charge.baseline

    @property
    def savings(self) -> Decimal | None:
        """`baseline - cost`: the embeddings spent for the request lower it (they have no baseline of their own)."""
        cost = self.cost
        return None if cost is None or self.charge is None else self.charge.baseline - cost

    @property
    def estimated(self) -> bool:
        """The charge rests on estimated usage (a stream that ended before its usage came)."""
        return self.charge is not None and self.charge.estimated

    def seconds(self) -> float:
        """Total time from arrival to the response's last byte (or to now, before the end)."""
        return (self.ended_at if self.ended_at is not None else time.perf_counter()) - self.started

    def upstream_total(self) -> float:
        """Time spent on upstreams, a stream's tail after its first event included."""
        total = self.upstream_seconds
        if self.stream and self.answered_at is not None and self.ended_at is not None:
            total += self.ended_at - self.answered_at
        return total


def priced(prices: PriceTable, model: str, tokens: int) -> Embedding:
    """Embedding tokens `model` was billed, with their cost (None when the model has no price)."""
    return Embedding(model=model, tokens=tokens, cost=prices.cost(model, Usage(prompt_tokens=tokens)))
