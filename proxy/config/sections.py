"""The policy file's sections as plain structs: what each block of the file may say, with its bounds.

Leaf: imports nothing of the project but `proxy.wire`. The loader (`proxy.config.policyfile`) checks how
the sections fit together; `proxy.config.settings` adds the environment. A route's settings are its kind's
(`routes.registry`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from proxy.wire.redisurl import redact_url

__all__ = [
    "DEFAULT_BASE_URL",
    "AuthSettings",
    "BreakerSettings",
    "CacheSettings",
    "CorsSettings",
    "DeadlineSettings",
    "EmbedderSettings",
    "PassthroughSettings",
    "Price",
    "RedactSettings",
    "RetentionSettings",
    "RetrySettings",
    "ServerSettings",
    "TeamLimits",
    "TierPrice",
    "TimeoutSettings",
    "TrafficSettings",
    "UpstreamFile",
]

AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
DEFAULT_BASE_URL = "https://api.openai.com/v1"


Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class TimeoutSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Upstream timeouts in seconds."""

    connect: Seconds = 10.0
    read: Seconds = 120.0
    total: Seconds = 600.0


class UpstreamFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An upstream as the file (or the `OPENAI_*` variables) describe it; the key is wrapped later."""

    # No query or fragment: every upstream path is appended to it (`routes.upstream.UpstreamPath`).
    base_url: Annotated[str, msgspec.Meta(pattern="^https?://[^?#]*$")] = DEFAULT_BASE_URL
    api_key: str | None = None
    timeout: TimeoutSettings = TimeoutSettings()
    max_connections: AtLeastOne = 1000


class RetrySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries on one route before its fallbacks: on 429, 5xx, timeouts and connection failures.

    None by default: the OpenAI SDKs retry on their own (twice), and retries here multiply theirs.
    """

    attempts: Annotated[int, msgspec.Meta(ge=0, le=10)] = 0
    backoff: Seconds = 0.25
    """First wait in seconds; doubled on each retry, with full jitter."""
    max_backoff: Seconds = 8.0
    """No wait is longer, `retry-after` included."""


class BreakerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-route circuit breaker: open after `failures` failures in a row, probe again after `cooldown` s."""

    failures: AtLeastOne = 5
    """Failed requests in a row (a request with its retries counts once)."""
    cooldown: Seconds = 30.0
    count_rate_limits: bool = False
    """Whether an upstream's 429 counts as a failure (off: a rate-limited route is busy, not broken)."""


class DeadlineSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One deadline per request, across its attempts, retries and fallbacks (`proxy.deadline`), in seconds."""

    default: Seconds = 600.0
    """A request's deadline when neither its rule nor its client gives one."""
    max: Seconds = 600.0
    """The longest a client's `x-turnout-timeout` may ask for; a longer one is cut to this."""
    fallback_share: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.5
    """The part of the deadline held back for the fallbacks while a route before them is tried."""


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The response cache: in-process by default, Redis (shared by every replica) when `url` names one."""

    enabled: bool = True
    backend: Literal["memory", "redis"] | None = None
    """None: `redis` when `url` is given, else `memory`."""
    url: Annotated[str, msgspec.Meta(pattern="^(redis|rediss|unix)://")] | None = None
    """The Redis URL, as redis-py reads it (checked at load); it may carry a password, so it is never shown whole."""
    max_bytes: AtLeastOne = 64 * 1024 * 1024
    """The in-process cache's size limit (keys and answers); the least recently used go first."""
    ttl: Seconds = 3600.0
    """Seconds an answer stays, unless its rule says otherwise."""
    timeout: Seconds = 0.05
    """Seconds one Redis command may take; slower is a miss."""
    connect_timeout: Seconds = 0.25
    """Seconds to connect to Redis."""
    retry_after: Seconds = 1.0
    """After a Redis failure, seconds during which the cache answers misses without asking Redis."""
    lock_ttl: Seconds = 30.0
    """Single flight: the longest the first of identical requests holds the lock, and the others wait for it."""
    lock_lease: Seconds = 3.0
    """Single flight: the lock's lease, renewed while its holder's upstream call runs; a lock whose holder
    finished, died or lost Redis is gone within this many seconds, and a waiter then asks the upstream."""
    key_prefix: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_.:-]{1,64}$")] = "turnout"
    """Every Redis key starts with it (several deployments can share one Redis)."""
    max_connections: AtLeastOne = 64
    """Redis connections in the pool."""

    @property
    def uses_redis(self) -> bool:
        """Whether the backend is Redis."""
        return self.backend == "redis" or (self.backend is None and self.url is not None)

    def __repr__(self) -> str:
        return f"CacheSettings(backend={'redis' if self.uses_redis else 'memory'}, url={redact_url(self.url)!r})"


class TierPrice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A model's USD per 1,000 tokens at one service tier (`flex`, `priority`, `batch`)."""

    input: Annotated[float, msgspec.Meta(ge=0)]
    output: Annotated[float, msgspec.Meta(ge=0)]
    cached_input: Annotated[float, msgspec.Meta(ge=0)] | None = None


class Price(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per 1,000 tokens: `input` and `output`, and optionally cached input, audio and the other tiers.

    A rate left out is the plain one (cached input at `input`, audio at `input`/`output`); a tier left out is
    the standard price (`batch`: half of it). See `proxy.accounting.cost`.
    """

    input: Annotated[float, msgspec.Meta(ge=0)]
    output: Annotated[float, msgspec.Meta(ge=0)]
    cached_input: Annotated[float, msgspec.Meta(ge=0)] | None = None
    audio_input: Annotated[float, msgspec.Meta(ge=0)] | None = None
    audio_output: Annotated[float, msgspec.Meta(ge=0)] | None = None
    flex: TierPrice | None = None
    priority: TierPrice | None = None
    batch: TierPrice | None = None


class EmbedderSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which model embeds: a local one (no `upstream`; `model` may name one), or `model` on an upstream."""

    upstream: str | None = None
    model: str | None = None
    dimension: Annotated[int, msgspec.Meta(ge=1, le=8192)] | None = None
    """None: the local model's own (`routes.knowledge.embedding.LOCAL_MODELS`), 256 for an upstream's."""


class PassthroughSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the requests under `/v1/` that Turnout does not route (files, batches, ...) are passed through."""

    upstream: str | None = None
    """An upstream of the file by name (None: the default upstream, that of the first route)."""


Origin = Annotated[str, msgspec.Meta(pattern=r"^(\*|https?://[^/\s]+)$")]


class CorsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Browser clients: the origins that may call Turnout from a page, and the request headers they may send."""

    origins: Annotated[tuple[Origin, ...], msgspec.Meta(min_length=1)]
    """`https://app.example.com` (scheme, host and port, as a browser sends `Origin`), or `*` for any."""
    headers: tuple[Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9-]+$")], ...] = (
        "authorization",
        "content-type",
        "openai-organization",
        "openai-project",
        "x-request-id",
        "x-turnout-caller",
    )
    """Request headers a page may send (the SDKs' own `x-stainless-*` headers are always allowed too)."""
    max_age: Annotated[int, msgspec.Meta(ge=0, le=86400)] = 600
    """Seconds a browser may keep a preflight's answer."""


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How Turnout's own HTTP server runs."""

    host: str = "127.0.0.1"
    port: Port = 8000
    workers: AtLeastOne = 1
    max_body_bytes: AtLeastOne = 16 * 1024 * 1024
    drain_timeout: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    shutdown_linger: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    """On SIGTERM, seconds an idle kept-alive connection stays open for a request on its way (0: closed at once)."""
    max_connections: AtLeastOne = 10_000
    """Client connections one worker keeps open at once; one more is answered 503 and closed."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    idle_timeout: Seconds = 75.0
    """A connection with no request under way (new, or kept alive after a response) is closed after this."""
    header_timeout: Seconds = 10.0
    """From a request's first byte (a new connection's: from its opening) to the end of its headers; else 408."""
    body_timeout: Seconds = 30.0
    """From the end of a request's headers to the end of its body, plus a second per 64 KiB; else 408."""
    log_level: LogLevel = "info"
    access_log: bool = True
    """One JSON line per request on the `turnout.access` logger."""
    log_content: bool = False
    """Put the request's messages and the answer in the access log line (off: no message content)."""
    cors: CorsSettings | None = None
    """Browser clients allowed (None, the default: no CORS headers, browsers keep pages out)."""


Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
Usd = Annotated[float, msgspec.Meta(gt=0)]


class TeamLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A team's limits, shared by all its keys (each key has its own too: `turnout keys create`)."""

    rpm: AtLeastOne | None = None
    """Requests per minute, all the team's keys together."""
    tpm: AtLeastOne | None = None
    """Tokens per minute (prompt and completion), all the team's keys together."""
    budget_usd: Usd | None = None
    """USD per `period`: a request that would start over it is refused (429 `insufficient_quota`)."""
    period: Literal["day", "month"] = "month"
    """UTC calendar day or month."""


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Who may call: `keys` (a Turnout key on every request) or `off` (anyone who can reach Turnout)."""

    mode: Literal["keys", "off"] = "off"
    teams: dict[Name, TeamLimits] = {}
    redis_url: Annotated[str, msgspec.Meta(pattern="^(redis|rediss|unix)://")] | None = None
    """Where the limits' counters live, shared by every replica (None: the cache's Redis when it has one, else
    each process counts alone)."""
    redis_timeout: Seconds = 0.5
    """Seconds one limits command may take (a connection from the pool included); slower counts as Redis being
    unreachable. Longer than the cache's: a limit that falls back to per-process counting can be overspent."""
    fail_closed: bool = False
    """When the limits' Redis is unreachable, refuse (503) rather than count per process."""
    soft_budget: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    """Share of a budget past which each request counts in `turnout_budget_soft_exceeded_total`."""
    shadow_spend: bool = False
    """Shadow copies' spend counts against the caller's team budget (it is always in the metrics)."""
    refresh: Seconds = 2.0
    """Seconds between two looks at the key table: a revoked or expired key stops working within it."""
    metric_keys: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 50
    """Keys (and teams) with a metric label of their own, the first seen by each process; the rest are `other`."""
    failed_attempts: AtLeastOne = 30
    """Failed key checks a client address may make per minute; past it, 429 without looking at the key."""

    @property
    def keys(self) -> bool:
        """Whether every request needs a key."""
        return self.mode == "keys"

    def __repr__(self) -> str:
        return (
            f"AuthSettings(mode={self.mode!r}, teams={sorted(self.teams)!r}, redis_url={redact_url(self.redis_url)!r})"
        )


class RedactSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the traffic log removes from the content it keeps, before it keeps it."""

    patterns: tuple[str, ...] = ()
    """Regular expressions (Python's `re`) whose matches become `[redacted]` (checked at load)."""
    defaults: bool = True
    """Also remove e-mail addresses, phone numbers, card numbers and API keys (`sk-...`, bearer tokens)."""


class RetentionSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long the traffic log keeps exchanges: by age and by count (None: without limit)."""

    days: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_rows: AtLeastOne | None = None
    every: Seconds = 300.0
    """Seconds between two prunes (each worker's writer prunes)."""


class TrafficSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The traffic log (`proxy.traffic`): every exchange, off the request path, in a database or JSONL files."""

    enabled: bool = False
    store: Annotated[str, msgspec.Meta(pattern=r"^((sqlite|postgres|postgresql|jsonl):///?.+|.+\.jsonl)$")] | None = (
        None
    )
    """`sqlite:///path.db`, `postgresql://...`, a path ending `.jsonl`, or `jsonl:///dir` (None: the keys database,
    `database_url`). It may carry a password, so it is never shown whole."""
    log: Literal["content", "metadata"] = "metadata"
    """What is kept of a request whose rule says nothing: `metadata`, or `content` (request and answer, redacted)."""
    queue: AtLeastOne = 10_000
    """Exchanges waiting to be written, at most; past it, new ones are dropped (and counted)."""
    batch: AtLeastOne = 500
    """Exchanges written in one transaction, at most."""
    redact: RedactSettings = RedactSettings()
    retention: RetentionSettings = RetentionSettings()

    def __repr__(self) -> str:
        return f"TrafficSettings(enabled={self.enabled!r}, store={redact_url(self.store)!r}, log={self.log!r})"
