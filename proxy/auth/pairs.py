"""What the database keeps of parity: each evaluated pair, compactly, and each rule's canary state (version 3).

Both dialects store the same rows (`PairRow`, `CanaryRow`) with the same statements (`STATEMENTS`, written with
`?` placeholders; PostgreSQL's are `%s`). A canary row is changed only by `UPDATE ... WHERE version = ?`, a
compare-and-set: of two replicas that read the same version, one writes and the other sees it did not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "STATEMENTS",
    "CanaryRow",
    "OutcomeCount",
    "PairRow",
    "PairStore",
    "canary_row",
    "canary_values",
    "pair_values",
]


@dataclass(frozen=True, slots=True)
class PairRow:
    """One evaluated pair: which request, which rule and routes, what the evaluator said, and when."""

    at: datetime
    request_id: str
    rule: str
    candidate: str
    reference: str
    outcome: str
    """win, tie, loss or undecided."""
    evaluator: str | None
    """The evaluator that decided (None: none did)."""
    canary_version: int = 0
    """The canary's version when the pair was made (0: the rule has no canary), to count a step's pairs."""
    candidate_text: str | None = None
    """The candidate's answer text, only when the deployment logs content."""
    reference_text: str | None = None
    judge_outcome: str | None = None
    """The judge's outcome when it was asked about a pair a deterministic evaluator decided (its audit)."""


@dataclass(frozen=True, slots=True)
class OutcomeCount:
    """How many pairs of one canary version had one outcome (by one evaluator, with one judge's outcome)."""

    canary_version: int
    outcome: str
    pairs: int
    evaluator: str | None = None
    judge_outcome: str | None = None


@dataclass(frozen=True, slots=True)
class CanaryRow:
    """A rule's canary as stored: its share (percent), the shares that passed, status and version."""

    rule: str
    candidate: str
    share: int
    passed: tuple[int, ...]
    status: str
    version: int
    since_version: int
    """The version its evidence starts at: pairs of earlier versions (before a reset) do not count."""
    updated_at: datetime


class PairStore(Protocol):
    """Where pairs and canaries live: the database (`proxy.auth.store.Database`) or Redis (`pairs_redis`).

    Failures raise `proxy.auth.store.DatabaseError`.
    """

    display_url: str

    async def open(self) -> None:
        """Connect (and migrate, for a database)."""

    async def close(self) -> None:
        """Release the connections."""

    async def record_pair(self, row: PairRow) -> None:
        """Keep one evaluated pair."""

    async def pair_counts(self, rule: str, candidate: str, since_version: int = 0) -> list[OutcomeCount]:
        """The pairs of `rule` and `candidate` at canary versions from `since_version`, grouped."""

    async def canary(self, rule: str) -> CanaryRow | None:
        """The rule's canary state, or None before it has one."""

    async def canaries(self) -> list[CanaryRow]:
        """Every rule's canary state, by rule."""

    async def put_canary(self, row: CanaryRow, expected_version: int | None) -> bool:
        """Write `row` if the stored version is `expected_version` (None: only if there is none); False: lost."""


_PAIR_COLUMNS = (
    "at, request_id, rule, candidate, reference, outcome, evaluator, canary_version, candidate_text, reference_text, "
    "judge_outcome"
)
_CANARY_COLUMNS = "rule, candidate, share, passed, status, version, since_version, updated_at"
STATEMENTS = {
    "insert_pair": f"INSERT INTO turnout_parity_pairs ({_PAIR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
    "count_pairs": (
        "SELECT canary_version, outcome, COUNT(*), evaluator, judge_outcome FROM turnout_parity_pairs "
        "WHERE rule = ? AND candidate = ? AND canary_version >= ? "
        "GROUP BY canary_version, outcome, evaluator, judge_outcome"
    ),
    "canary": f"SELECT {_CANARY_COLUMNS} FROM turnout_canary WHERE rule = ?",  # noqa: S608 - constant columns
    "canaries": f"SELECT {_CANARY_COLUMNS} FROM turnout_canary ORDER BY rule",  # noqa: S608
    "insert_canary": (
        f"INSERT INTO turnout_canary ({_CANARY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule) DO NOTHING"  # noqa: S608
    ),
    "update_canary": (
        "UPDATE turnout_canary SET candidate = ?, share = ?, passed = ?, status = ?, version = ?, since_version = ?, "
        "updated_at = ? WHERE rule = ? AND version = ?"
    ),
}
"""The statements, in SQLite's placeholders."""


def pair_values(row: PairRow, time: Any) -> tuple[Any, ...]:
    """The columns of a pair, `time` turning its datetime into the database's."""
    return (
        time(row.at),
        row.request_id,
        row.rule,
        row.candidate,
        row.reference,
        row.outcome,
        row.evaluator,
        row.canary_version,
        row.candidate_text,
        row.reference_text,
        row.judge_outcome,
    )


def canary_values(row: CanaryRow, time: Any) -> tuple[Any, ...]:
    """The columns of a canary row, in `_CANARY_COLUMNS` order."""
    passed = json.dumps(list(row.passed))
    return (
        row.rule,
        row.candidate,
        row.share,
        passed,
        row.status,
        row.version,
        row.since_version,
        time(row.updated_at),
    )


def canary_row(values: Any, time: Any) -> CanaryRow:
    """A stored row back as a `CanaryRow`; `time` turns the database's time into a UTC datetime."""
    rule, candidate, share, passed, status, version, since_version, updated_at = values
    steps = tuple(int(value) for value in json.loads(passed))
    return CanaryRow(rule, candidate, int(share), steps, status, int(version), int(since_version), time(updated_at))
