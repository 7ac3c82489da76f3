"""A caller's key as Turnout keeps it: the record (never the key itself, only its digest), new keys, periods.

A key is `tk-` and 43 URL-safe characters (32 random bytes); only its SHA-256 digest is stored, so a leaked
database or backup lets nobody in. A record is checked when it is made (`KeySpecError`): the name, the limits,
the budget and its period.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Literal

__all__ = [
    "KEY_PREFIX",
    "KeyRecord",
    "KeySpecError",
    "Period",
    "digest_of",
    "new_key",
    "next_period_start",
    "period_start",
]

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
KEY_PREFIX = "tk-"
PREFIX_LENGTH = 8
"""How much of a key `keys list` shows: `tk-` and 5 characters, enough to tell keys apart, too few to guess one."""
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class KeySpecError(ValueError):
    """A key record that cannot be: a bad name, a limit below 1, a budget without a period, a naive time."""


def _aware(value: datetime | None, what: str) -> None:
    if value is not None and value.utcoffset() is None:
        raise KeySpecError(f"{what} must be timezone-aware")


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key: who it is, what it may use, its limits and budget, and whether it still works."""

    name: str
    """Unique, `[A-Za-z0-9._-]{1,64}`: the caller's name in policy conditions, logs and metrics."""
    digest: str
    """SHA-256 hex of the whole key text; the key itself is never stored."""
    prefix: str
    """The key's first 8 characters (`tk-` + 5), for `keys list`."""
    created_at: datetime
    team: str | None = None
    routes: tuple[str, ...] | None = None
    """The routes the key may be sent to; None: every route."""
    models: tuple[str, ...] | None = None
    """fnmatch globs (case-sensitive) on the requested model; None: any model."""
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: Decimal | None = None
    period: Period | None = None
    """Set whenever `budget_usd` is (and only then)."""
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise KeySpecError(f"key name {self.name!r}: use 1 to 64 of A-Z a-z 0-9 . _ -")
        if self.team is not None and not _NAME.fullmatch(self.team):
            raise KeySpecError(f"team {self.team!r}: use 1 to 64 of A-Z a-z 0-9 . _ -")
        for what, limit in (("rpm", self.rpm), ("tpm", self.tpm)):
            if limit is not None and limit < 1:
                raise KeySpecError(f"{what} must be at least 1")
        for what, patterns in (("routes", self.routes), ("models", self.models)):
            if patterns is not None and (not patterns or not all(patterns)):
                raise KeySpecError(f"{what}: name at least one, none empty (or leave it out: any)")
        if self.budget_usd is not None and not (self.budget_usd.is_finite() and self.budget_usd > 0):
            raise KeySpecError("budget_usd must be a positive amount")
        if (self.budget_usd is None) != (self.period is None):
            raise KeySpecError("a budget needs its period (day or month), and a period its budget")
        if self.period is not None and self.period not in PERIODS:
            raise KeySpecError(f"period {self.period!r}: day or month")
        _aware(self.created_at, "created_at")
        _aware(self.expires_at, "expires_at")
        _aware(self.revoked_at, "revoked_at")

    def active(self, now: datetime) -> bool:
        """Whether the key works at `now`: not revoked, not expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def state(self, now: datetime) -> Literal["active", "revoked", "expired"]:
        """`active`, `revoked` or `expired` (revoked wins), as `keys list` shows it."""
        if self.revoked_at is not None:
            return "revoked"
        return "active" if self.active(now) else "expired"

    def may_use_route(self, route: str) -> bool:
        """Whether requests with this key may be sent to `route`."""
        return self.routes is None or route in self.routes

    def may_use_model(self, model: str) -> bool:
        """Whether this key may ask for `model` (one of its globs matches, case-sensitive as model ids are)."""
        return self.models is None or any(fnmatchcase(model, pattern) for pattern in self.models)


def new_key() -> str:
    """A fresh key: `tk-` + 32 random bytes, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest_of(key: bytes) -> str:
    """The SHA-256 hex digest a key is stored and looked up by.

    A plain hash is enough (no salt, no slow KDF): the keys are 256 random bits, not passwords, so
    nothing can be guessed from the digest, and the hot path hashes every request's key.
    """
    return hashlib.sha256(key).hexdigest()


def period_start(period: Period, now: datetime) -> datetime:
    """The start of the budget period `now` is in: that day's UTC midnight, or the first of its month."""
    utc = now.astimezone(UTC)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "day" else day.replace(day=1)


def next_period_start(period: Period, now: datetime) -> datetime:
    """When the period `now` is in ends: the next UTC midnight, or the first of the next month."""
    start = period_start(period, now)
    if period == "day":
        return start.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)
