"""A key revoked by another process (`turnout keys revoke`) stops working in a running KeyRing within its refresh."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from proxy.auth.keyring import KeyRing
from proxy.auth.operations import create_key
from proxy.auth.store import open_database
from proxy.tasks import BackgroundTasks
from tests.rawhttp import eventually

TURNOUT = Path(sys.executable).parent / "turnout"
REFRESH = 0.2


async def test_a_revocation_in_another_process_reaches_the_ring(auth_database_url: str) -> None:
    database = open_database(auth_database_url)
    await database.open()
    tasks = BackgroundTasks()
    ring = KeyRing(database, refresh=REFRESH)
    try:
        _, alice = await create_key(database, "alice")
        _, bob = await create_key(database, "bob")
        await ring.start(tasks)
        assert ring.find(alice.encode()) is not None
        version = ring.version

        revoke = await asyncio.create_subprocess_exec(
            str(TURNOUT),
            "keys",
            "revoke",
            "alice",
            env={**os.environ, "TURNOUT_DATABASE_URL": auth_database_url},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await revoke.communicate()
        assert revoke.returncode == 0, err
        assert out.strip() == b"revoked 'alice'"

        # The revocation is committed now: the next poll (at most REFRESH s away) must drop the key.
        await eventually(lambda: ring.find(alice.encode()) is None)
        assert ring.version is not None
        assert version is not None
        assert ring.version > version
        assert ring.find(bob.encode()) is not None  # the others stay
    finally:
        await ring.close()
        await tasks.drain(5)
        await database.close()
