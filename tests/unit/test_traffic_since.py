"""`--since` of the traffic commands: ISO dates and times, or a span before now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.cli.traffic_args import parse_since
from proxy.config.errors import ConfigError

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds_before"),
    [("7d", 7 * 86_400), ("24h", 86_400), ("30m", 1800), ("2w", 14 * 86_400), ("90s", 90), ("1.5h", 5400)],
)
def test_relative_forms_are_spans_before_now(text: str, seconds_before: float) -> None:
    assert parse_since(text, NOW) == NOW - seconds_before


def test_iso_dates_and_times_are_utc_unless_they_say() -> None:
    assert parse_since("2026-12-01", NOW) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T08:30", NOW) == datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T08:30+02:00", NOW) == datetime(2026, 12, 1, 6, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["yesterday", "7 days", "-3d", ""])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--since"):
        parse_since(text, NOW)
