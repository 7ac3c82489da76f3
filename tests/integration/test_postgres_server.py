"""The PostgreSQL the tests start where none answers (tests/postgres_server.py) works: exercised here on purpose,
since a machine with a server on 5432 would otherwise never run that path."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from proxy.auth.store import SpendEntry, open_database
from tests.postgres_server import PostgresServer, answers, with_schema


async def test_a_cluster_of_our_own_starts_serves_turnout_and_stops() -> None:
    server = PostgresServer()
    try:
        server.start()
        assert answers(server.url)
        database = open_database(with_schema(server.url, "turnout_own"))
        await database.open()
        try:
            now = datetime.now(UTC)
            await database.record_spend(
                [SpendEntry(now, "k", None, None, "chat", None, Decimal("0.5"), 1, 1, False, "r")]
            )
            assert await database.spent(since=now) == Decimal("0.5")
        finally:
            await database.close()
    finally:
        server.close()
    assert not answers(server.url)
