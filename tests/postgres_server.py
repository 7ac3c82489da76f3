"""Real PostgreSQL servers for the tests: find one that answers, else start our own from `initdb` and `pg_ctl`.

The binaries come from PATH or Debian's /usr/lib/postgresql/*/bin (`make test-deps` installs the `postgresql`
package, as root, when neither a server nor the binaries are there). initdb refuses to run as root: as root,
the cluster is made and run as the `postgres` user (which Debian's package creates) through `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import psycopg
from psycopg import sql

from tests.redis_server import free_port


def answers(url: str, timeout: int = 2) -> bool:
    """Whether a PostgreSQL server at `url` lets us in."""
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.Error:
        return False


def postgres_binary(name: str) -> str | None:
    """The path of `initdb` or `pg_ctl`: PATH first, then the newest Debian version's."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    return candidates[-1] if candidates else None


MISSING = (
    "no PostgreSQL for the tests: nothing answers on 127.0.0.1:5432 (user postgres, database test, trust), "
    "TURNOUT_TEST_POSTGRES_URL is not set, and no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin: "
    "run `make test-deps` as root (installs Debian's postgresql) or set TURNOUT_TEST_POSTGRES_URL"
)


class PostgresServer:
    """A PostgreSQL cluster of our own in a temporary directory, on a free loopback port, trust auth."""

    def __init__(self) -> None:
        initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError(MISSING)
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="turnout-postgres-")
        self._data = Path(self._dir.name) / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("initdb cannot run as root and there is no `postgres` user to run it as") from None
            os.chown(self._dir.name, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._started = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[-500:]}")

    def start(self, timeout: float = 30.0) -> None:
        self._run(self._initdb, "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self._dir.name} -c fsync=off"
        log = str(Path(self._dir.name) / "server.log")
        self._run(self._pg_ctl, "-D", str(self._data), "-o", options, "-l", log, "-w", "-t", str(int(timeout)), "start")
        self._started = True
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + timeout
        while not answers(admin, 1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not answer on port {self.port}")
            time.sleep(0.05)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("CREATE DATABASE test")

    def close(self) -> None:
        if self._started:
            self._run(self._pg_ctl, "-D", str(self._data), "-m", "fast", "-w", "stop")
            self._started = False
        self._dir.cleanup()


def with_schema(url: str, schema: str) -> str:
    """`url` with Turnout's `schema=` parameter added."""
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query, keep_blank_values=True), ("schema", schema)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def drop_schema(url: str, schema: str) -> None:
    """Drop `schema` and everything in it (only it: the server may be shared)."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
