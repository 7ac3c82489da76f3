"""The database's schema, as versioned migrations per dialect, and which of them a database still needs.

Each database keeps the versions applied in `turnout_schema`. `open()` applies the missing ones in order,
in one transaction, under a lock that makes two processes starting at once safe: PostgreSQL's transaction-scoped
advisory lock (`MIGRATION_LOCK`), SQLite's `BEGIN IMMEDIATE` (one writer at a time). A migration is never
edited once released: a change is a new version. Versions need not be consecutive (3 exists before 2 and 4,
which are reserved): `pending` applies whichever are missing, in order.

Money is TEXT holding a decimal (SQLite) or NUMERIC (PostgreSQL), never a float; times are ISO-8601 UTC text
of a fixed width (SQLite, so that text order is time order) or `timestamptz`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["MIGRATION_LOCK", "POSTGRES", "SQLITE", "Migration", "pending"]

MIGRATION_LOCK = 0x7475726E6F7574
"""PostgreSQL advisory lock id ("turnout" in ASCII) held while migrating."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: its version, what it does, and its statements (run in order)."""

    version: int
    description: str
    statements: tuple[str, ...]


SCHEMA_TABLE = "CREATE TABLE IF NOT EXISTS turnout_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
"""Where the applied versions are kept (the same in both dialects)."""

SQLITE: tuple[Migration, ...] = (
    Migration(
        1,
        "keys, the keys' version counter, the spend ledger",
        (
            """CREATE TABLE turnout_keys (
                name TEXT PRIMARY KEY,
                digest TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                created_at TEXT NOT NULL,
                team TEXT,
                routes TEXT,
                models TEXT,
                rpm INTEGER,
                tpm INTEGER,
                budget_usd TEXT,
                period TEXT,
                expires_at TEXT,
                revoked_at TEXT
            )""",
            "CREATE TABLE turnout_keys_version (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)",
            "INSERT INTO turnout_keys_version (id, version) VALUES (1, 0)",
            """CREATE TABLE turnout_ledger (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                key TEXT NOT NULL,
                team TEXT,
                route TEXT,
                endpoint TEXT NOT NULL,
                model TEXT,
                cost_usd TEXT NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                cache_hit INTEGER NOT NULL,
                request_id TEXT NOT NULL
            )""",
            "CREATE INDEX turnout_ledger_at ON turnout_ledger (at)",
            "CREATE INDEX turnout_ledger_key_at ON turnout_ledger (key, at)",
            "CREATE INDEX turnout_ledger_team_at ON turnout_ledger (team, at)",
        ),
    ),
    Migration(
        2,
        "the traffic log (proxy.traffic)",
        (
            """CREATE TABLE turnout_traffic (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                request_id TEXT NOT NULL,
                at TEXT NOT NULL,
                endpoint TEXT NOT NULL,
                stream INTEGER NOT NULL,
                caller TEXT,
                team TEXT,
                route TEXT,
                rule TEXT,
                reason TEXT,
                model TEXT,
                fallbacks TEXT NOT NULL,
                status INTEGER NOT NULL,
                error TEXT,
                cache TEXT,
                usage TEXT,
                cost TEXT,
                baseline TEXT,
                savings TEXT,
                latency_ms REAL,
                ttfb_ms REAL,
                score REAL,
                label TEXT,
                comment TEXT,
                request TEXT,
                answer TEXT
            )""",
            "CREATE UNIQUE INDEX turnout_traffic_request_id ON turnout_traffic (request_id)",
            "CREATE INDEX turnout_traffic_at ON turnout_traffic (at)",
            "CREATE INDEX turnout_traffic_route_at ON turnout_traffic (route, at)",
            "CREATE INDEX turnout_traffic_rule_at ON turnout_traffic (rule, at)",
            "CREATE INDEX turnout_traffic_caller_at ON turnout_traffic (caller, at)",
        ),
    ),
    Migration(
        3,
        "parity pairs and canary states",
        (
            """CREATE TABLE turnout_parity_pairs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at TEXT NOT NULL,
                request_id TEXT NOT NULL,
                rule TEXT NOT NULL,
                candidate TEXT NOT NULL,
                reference TEXT NOT NULL,
                outcome TEXT NOT NULL,
                evaluator TEXT,
                canary_version INTEGER NOT NULL,
                candidate_text TEXT,
                reference_text TEXT,
                judge_outcome TEXT
            )""",
            "CREATE INDEX turnout_parity_pairs_rule ON turnout_parity_pairs (rule, candidate, canary_version)",
            """CREATE TABLE turnout_canary (
                rule TEXT PRIMARY KEY,
                candidate TEXT NOT NULL,
                share INTEGER NOT NULL,
                passed TEXT NOT NULL,
                status TEXT NOT NULL,
                version INTEGER NOT NULL,
                since_version INTEGER NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "the fine-tuning holdout: exchanges kept out of training exports for good",
        (
            """CREATE TABLE turnout_holdout (
                request_id TEXT PRIMARY KEY,
                held_at TEXT NOT NULL,
                route TEXT,
                rule TEXT,
                prompt_key TEXT
            )""",
            "CREATE INDEX turnout_holdout_prompt_key ON turnout_holdout (prompt_key)",
        ),
    ),
)

POSTGRES: tuple[Migration, ...] = (
    Migration(
        1,
        "keys, the keys' version counter, the spend ledger",
        (
            """CREATE TABLE turnout_keys (
                name TEXT PRIMARY KEY,
                digest TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                team TEXT,
                routes TEXT,
                models TEXT,
                rpm INTEGER,
                tpm INTEGER,
                budget_usd NUMERIC,
                period TEXT,
                expires_at TIMESTAMPTZ,
                revoked_at TIMESTAMPTZ
            )""",
            "CREATE TABLE turnout_keys_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
            "INSERT INTO turnout_keys_version (id, version) VALUES (1, 0)",
            """CREATE TABLE turnout_ledger (
                id BIGSERIAL PRIMARY KEY,
                at TIMESTAMPTZ NOT NULL,
                key TEXT NOT NULL,
                team TEXT,
                route TEXT,
                endpoint TEXT NOT NULL,
                model TEXT,
                cost_usd NUMERIC NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cache_hit BOOLEAN NOT NULL,
                request_id TEXT NOT NULL
            )""",
            "CREATE INDEX turnout_ledger_at ON turnout_ledger (at)",
            "CREATE INDEX turnout_ledger_key_at ON turnout_ledger (key, at)",
            "CREATE INDEX turnout_ledger_team_at ON turnout_ledger (team, at)",
        ),
    ),
    Migration(
        2,
        "the traffic log (proxy.traffic)",
        (
            """CREATE TABLE turnout_traffic (
                id BIGSERIAL PRIMARY KEY,
                request_id TEXT NOT NULL,
                at TIMESTAMPTZ NOT NULL,
                endpoint TEXT NOT NULL,
                stream BOOLEAN NOT NULL,
                caller TEXT,
                team TEXT,
                route TEXT,
                rule TEXT,
                reason TEXT,
                model TEXT,
                fallbacks JSONB NOT NULL,
                status INTEGER NOT NULL,
                error TEXT,
                cache TEXT,
                usage JSONB,
                cost NUMERIC,
                baseline NUMERIC,
                savings NUMERIC,
                latency_ms DOUBLE PRECISION,
                ttfb_ms DOUBLE PRECISION,
                score DOUBLE PRECISION,
                label TEXT,
                comment TEXT,
                request JSONB,
                answer JSONB
            )""",
            "CREATE UNIQUE INDEX turnout_traffic_request_id ON turnout_traffic (request_id)",
            "CREATE INDEX turnout_traffic_at ON turnout_traffic (at)",
            "CREATE INDEX turnout_traffic_route_at ON turnout_traffic (route, at)",
            "CREATE INDEX turnout_traffic_rule_at ON turnout_traffic (rule, at)",
            "CREATE INDEX turnout_traffic_caller_at ON turnout_traffic (caller, at)",
        ),
    ),
    Migration(
        3,
        "parity pairs and canary states",
        (
            """CREATE TABLE turnout_parity_pairs (
                id BIGSERIAL PRIMARY KEY,
                at TIMESTAMPTZ NOT NULL,
                request_id TEXT NOT NULL,
                rule TEXT NOT NULL,
                candidate TEXT NOT NULL,
                reference TEXT NOT NULL,
                outcome TEXT NOT NULL,
                evaluator TEXT,
                canary_version BIGINT NOT NULL,
                candidate_text TEXT,
                reference_text TEXT,
                judge_outcome TEXT
            )""",
            "CREATE INDEX turnout_parity_pairs_rule ON turnout_parity_pairs (rule, candidate, canary_version)",
            """CREATE TABLE turnout_canary (
                rule TEXT PRIMARY KEY,
                candidate TEXT NOT NULL,
                share INTEGER NOT NULL,
                passed TEXT NOT NULL,
                status TEXT NOT NULL,
                version BIGINT NOT NULL,
                since_version BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )""",
        ),
    ),
    Migration(
        4,
        "the fine-tuning holdout: exchanges kept out of training exports for good",
        (
            """CREATE TABLE turnout_holdout (
                request_id TEXT PRIMARY KEY,
                held_at TIMESTAMPTZ NOT NULL,
                route TEXT,
                rule TEXT,
                prompt_key TEXT
            )""",
            "CREATE INDEX turnout_holdout_prompt_key ON turnout_holdout (prompt_key)",
        ),
    ),
)


def pending(applied: Iterable[int], migrations: Sequence[Migration]) -> list[Migration]:
    """The migrations not yet in `applied`, in version order.

    Raises:
        RuntimeError: the database has a version this Turnout does not know (a newer release migrated it).
    """
    done = set(applied)
    known = {migration.version for migration in migrations}
    if unknown := done - known:
        raise RuntimeError(
            f"the database has schema version {max(unknown)}, newer than this Turnout knows ({max(known)}): upgrade it"
        )
    return sorted((m for m in migrations if m.version not in done), key=lambda m: m.version)
