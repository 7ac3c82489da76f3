"""`turnout keys` as a process, on a fresh SQLite file: the key shown once, never listed, and the exit statuses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TURNOUT = Path(sys.executable).parent / "turnout"
"""The console script of the environment running the tests (`.venv/bin/turnout`)."""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TURNOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'turnout.db'}"}


def keys(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [str(TURNOUT), "keys", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_create_prints_the_key_once_and_nothing_shows_it_again(env: dict[str, str]) -> None:
    created = keys(env, "create", "alice", "--team", "ops", "--rpm", "60", "--budget-usd", "12.5", "--models", "gpt-4*")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert re.fullmatch(r"tk-[A-Za-z0-9_-]{43}", key)
    assert created.stdout == key + "\n"  # the key alone on its line: `KEY=$(turnout keys create x)` works
    assert "only time" in created.stderr
    assert key not in created.stderr

    listed = keys(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout
    assert key[:8] in listed.stdout  # the prefix tells keys apart
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "TEAM", "PREFIX", "ROUTES", "MODELS", "LIMITS", "BUDGET", "EXPIRES", "STATE"]
    assert row.split()[:2] == ["alice", "ops"]
    assert "$12.5/month" in row
    assert row.split()[-1] == "active"

    for command in (["list", "--json"], ["show", "alice", "--json"], ["show", "alice"]):
        shown = keys(env, *command)
        assert shown.returncode == 0, shown.stderr
        assert key not in shown.stdout
        assert "digest" not in shown.stdout
    (record,) = json.loads(keys(env, "list", "--json").stdout)
    assert record["models"] == ["gpt-4*"]
    assert record["budget_usd"] == "12.5"
    assert record["period"] == "month"


def test_exit_statuses(env: dict[str, str]) -> None:
    assert keys(env, "create", "alice").returncode == 0
    exists = keys(env, "create", "alice")
    assert exists.returncode == 1
    assert exists.stderr.strip() == "turnout keys: a key named 'alice' exists already"
    assert exists.stdout == ""
    missing = keys(env, "show", "nobody")
    assert (missing.returncode, missing.stderr.strip()) == (1, "turnout keys: no key named 'nobody'")
    assert keys(env, "revoke", "nobody").returncode == 1
    assert keys(env, "usage", "nobody").returncode == 1
    for bad in (
        ["create", "bad name"],
        ["create", "x", "--rpm", "0"],
        ["create", "x", "--budget-usd", "-1"],
        ["create", "x", "--period", "day"],
        ["create", "x", "--expires", "yesterday"],
        ["create", "x", "--expires", "2001-01-01"],
        ["usage", "--since", "soon"],
        ["frobnicate"],
    ):
        done = keys(env, *bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert done.stderr.strip().splitlines()[-1].startswith("turnout keys"), done.stderr
    assert [k["name"] for k in json.loads(keys(env, "list", "--json").stdout)] == ["alice"]


def test_revoke_then_list_shows_it_revoked(env: dict[str, str]) -> None:
    keys(env, "create", "alice")
    revoked = keys(env, "revoke", "alice")
    assert (revoked.returncode, revoked.stdout.strip()) == (0, "revoked 'alice'")
    again = keys(env, "revoke", "alice")
    assert again.returncode == 0
    assert "revoked already" in again.stdout
    (record,) = json.loads(keys(env, "list", "--json").stdout)
    assert record["state"] == "revoked"


def test_the_database_comes_from_the_flag_then_the_environment_then_the_config(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("TURNOUT_DATABASE_URL", "TURNOUT_CONFIG")}
    config = tmp_path / "turnout.yaml"
    config.write_text("database_url: sqlite:///${DB_DIR}/from-config.db\n", encoding="utf-8")
    env = {**base, "TURNOUT_CONFIG": str(config), "DB_DIR": str(tmp_path)}
    assert keys(env, "create", "from-config").returncode == 0
    assert (tmp_path / "from-config.db").exists()
    env_url = {**env, "TURNOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'from-env.db'}"}
    assert keys(env_url, "create", "from-env").returncode == 0
    flag = ["--database-url", f"sqlite:///{tmp_path / 'from-flag.db'}"]
    assert (
        subprocess.run(  # noqa: S603
            [str(TURNOUT), "keys", *flag, "create", "from-flag"],
            env=env_url,
            capture_output=True,
            check=False,
            timeout=60,
        ).returncode
        == 0
    )
    assert (tmp_path / "from-env.db").exists()
    assert (tmp_path / "from-flag.db").exists()
    assert [k["name"] for k in json.loads(keys(env, "list", "--json").stdout)] == ["from-config"]
    default = {**base, "TURNOUT_DATA_DIR": str(tmp_path / "default")}
    assert keys(default, "create", "by-default").returncode == 0
    assert (tmp_path / "default" / "turnout.db").exists()
    unset = {**base, "TURNOUT_CONFIG": str(config)}
    done = keys(unset, "list")
    assert done.returncode == 2
    assert "DB_DIR is not set" in done.stderr


def test_usage_prints_spend_by_key_and_route(env: dict[str, str]) -> None:
    import asyncio
    from datetime import UTC, datetime
    from decimal import Decimal

    from proxy.auth.store import SpendEntry, open_database

    assert keys(env, "create", "alice", "--team", "ops").returncode == 0

    async def record() -> None:
        database = open_database(env["TURNOUT_DATABASE_URL"])
        await database.open()
        now = datetime.now(UTC)
        await database.record_spend(
            [
                SpendEntry(now, "alice", "ops", "gpt4", "chat", "gpt-4", Decimal("0.000001"), 3, 4, False, "r1"),
                SpendEntry(now, "alice", "ops", "gpt4", "chat", "gpt-4", Decimal("0.2"), 3, 4, False, "r2"),
                SpendEntry(now, "alice", "ops", "rag", "chat", "gpt-4", Decimal("0.1"), 1, 1, True, "r3"),
            ]
        )
        await database.close()

    asyncio.run(record())
    usage = keys(env, "usage", "alice", "--json")
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout) == [
        {
            "key": "alice",
            "team": "ops",
            "route": "gpt4",
            "requests": 2,
            "input_tokens": 6,
            "output_tokens": 8,
            "cost_usd": "0.200001",
        },
        {
            "key": "alice",
            "team": "ops",
            "route": "rag",
            "requests": 1,
            "input_tokens": 1,
            "output_tokens": 1,
            "cost_usd": "0.1",
        },
    ]
    table = keys(env, "usage")
    assert table.stdout.splitlines()[-1] == "total: $0.300001 over 3 requests"
    assert keys(env, "usage", "--since", "2100-01-01", "--json").stdout.strip() == "[]"
