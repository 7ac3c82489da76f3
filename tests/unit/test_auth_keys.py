"""Keys as records: digests, the route and model globs, expiry and revocation, budget periods, what is refused."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from proxy.auth.keys import KeyRecord, KeySpecError, digest_of, new_key, next_period_start, period_start

NOW = datetime(2026, 12, 3, 12, 30, tzinfo=UTC)


def record(**fields: object) -> KeyRecord:
    defaults: dict[str, object] = {"name": "alice", "digest": "d" * 64, "prefix": "tk-abcde", "created_at": NOW}
    return KeyRecord(**{**defaults, **fields})  # type: ignore[arg-type]


def test_a_new_key_is_tk_and_256_random_bits() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(re.fullmatch(r"tk-[A-Za-z0-9_-]{43}", key) for key in keys)


def test_the_digest_is_the_sha256_of_the_whole_key() -> None:
    key = new_key()
    assert digest_of(key.encode()) == hashlib.sha256(key.encode()).hexdigest()
    assert digest_of(key.encode()) != digest_of(key[:-1].encode())
    assert digest_of(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_routes_are_names_and_none_means_every_route() -> None:
    assert record().may_use_route("anything")
    limited = record(routes=("gpt4", "rag"))
    assert limited.may_use_route("gpt4")
    assert limited.may_use_route("rag")
    assert not limited.may_use_route("gpt")
    assert not limited.may_use_route("gpt4*")


@pytest.mark.parametrize(
    ("model", "allowed"),
    [
        ("gpt-4", True),
        ("gpt-4o-mini", True),
        ("text-embedding-3-small", True),
        ("text-embedding-3-large", False),
        ("GPT-4", False),  # model ids are case-sensitive
        ("ft:gpt-4:x", False),
        ("o1", True),
        ("o12", False),
    ],
)
def test_models_are_fnmatch_globs(model: str, allowed: bool) -> None:
    key = record(models=("gpt-4*", "text-embedding-3-small", "o?"))
    assert key.may_use_model(model) is allowed
    assert record().may_use_model(model)


def test_a_key_works_until_it_expires_or_is_revoked() -> None:
    expiring = record(expires_at=NOW + timedelta(hours=1))
    assert expiring.active(NOW)
    assert expiring.active(NOW + timedelta(minutes=59, seconds=59))
    assert not expiring.active(NOW + timedelta(hours=1))
    assert expiring.state(NOW + timedelta(hours=2)) == "expired"
    revoked = record(revoked_at=NOW, expires_at=NOW - timedelta(days=1))
    assert not revoked.active(NOW - timedelta(days=2))
    assert revoked.state(NOW) == "revoked"
    assert record().active(NOW + timedelta(days=10_000))
    assert record().state(NOW) == "active"


def test_expiry_compares_moments_not_wall_clock_text() -> None:
    expiring = record(expires_at=datetime(2026, 12, 3, 14, 0, tzinfo=timezone(timedelta(hours=2))))  # 12:00 UTC
    assert not expiring.active(NOW)
    assert expiring.active(NOW - timedelta(minutes=31))


def test_period_start_is_utc_midnight_or_the_first_of_the_month() -> None:
    assert period_start("day", NOW) == datetime(2026, 12, 3, tzinfo=UTC)
    assert period_start("month", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    # 01:30 on the 1st in UTC+2 is still the 30th of November in UTC
    local = datetime(2026, 12, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_start("day", local) == datetime(2026, 11, 30, tzinfo=UTC)
    assert period_start("month", local) == datetime(2026, 11, 1, tzinfo=UTC)
    assert period_start("day", datetime(2026, 12, 3, tzinfo=UTC)) == datetime(2026, 12, 3, tzinfo=UTC)


def test_the_next_period_starts_where_this_one_ends() -> None:
    assert next_period_start("day", NOW) == datetime(2026, 12, 4, tzinfo=UTC)
    assert next_period_start("month", NOW) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_period_start("day", datetime(2028, 2, 28, 23, 59, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)
    assert next_period_start("month", datetime(2027, 1, 31, tzinfo=UTC)) == datetime(2027, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "key name"),
        ({"name": "a b"}, "key name"),
        ({"name": "x" * 65}, "key name"),
        ({"team": "ops/dev"}, "team"),
        ({"rpm": 0}, "rpm"),
        ({"tpm": -1}, "tpm"),
        ({"routes": ()}, "routes"),
        ({"models": ("gpt-4", "")}, "models"),
        ({"budget_usd": Decimal(0), "period": "month"}, "positive"),
        ({"budget_usd": Decimal("NaN"), "period": "month"}, "positive"),
        ({"budget_usd": Decimal(5)}, "period"),
        ({"period": "day"}, "period"),
        ({"budget_usd": Decimal(5), "period": "week"}, "day or month"),
        ({"created_at": datetime(2026, 12, 3)}, "timezone-aware"),
        ({"expires_at": datetime(2027, 1, 1)}, "timezone-aware"),
    ],
)
def test_an_impossible_record_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(KeySpecError, match=message):
        record(**fields)


def test_a_valid_name_may_use_the_whole_alphabet() -> None:
    assert record(name="Team_A.svc-01", team="platform.ml").name == "Team_A.svc-01"
    assert record(name="x" * 64).name == "x" * 64
