"""The pair stores (SQLite, PostgreSQL, Redis), for the parity and canary contract suites alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from proxy.auth.pairs import PairStore
from proxy.auth.pairs_redis import RedisPairStore
from proxy.auth.store import open_database


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def pair_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store: an SQLite file, a PostgreSQL schema of this test's own, Redis under a prefix of its own."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'turnout.db'}"
    if request.param == "postgres":
        postgres: str = request.getfixturevalue("postgres_schema_url")
        return postgres
    url: str = request.getfixturevalue("redis_url")
    return f"redis+prefix={request.getfixturevalue('redis_prefix')}+{url}"


def open_pair_store(url: str) -> PairStore:
    """The store `url` (from `pair_store_url`) names, not yet open."""
    if url.startswith("redis+prefix="):
        prefix, _, redis_url = url.removeprefix("redis+prefix=").partition("+")
        return RedisPairStore(redis_url, prefix=prefix)
    return open_database(url)


@pytest.fixture
async def pair_opener(pair_store_url: str) -> AsyncIterator[Callable[[], PairStore]]:
    """Opens another connection to the test's store (a replica's); all are closed after the test."""
    opened: list[PairStore] = []

    def open_one() -> PairStore:
        database = open_pair_store(pair_store_url)
        opened.append(database)
        return database

    yield open_one
    for database in opened:
        await database.close()
