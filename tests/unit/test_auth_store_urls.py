"""Which database a URL names, where the SQLite default lives, and what a PostgreSQL URL shows and sends to libpq."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.auth.postgres import PostgresDatabase, split_schema
from proxy.auth.sqlite import SqliteDatabase
from proxy.auth.store import default_sqlite_path, open_database


def test_sqlite_urls_are_relative_or_absolute_paths() -> None:
    relative = open_database("sqlite:///data/turnout.db")
    assert isinstance(relative, SqliteDatabase)
    assert relative.path == Path("data/turnout.db")
    absolute = open_database("sqlite:////var/lib/turnout/turnout.db")
    assert isinstance(absolute, SqliteDatabase)
    assert absolute.path == Path("/var/lib/turnout/turnout.db")


def test_no_url_is_the_default_sqlite_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TURNOUT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    database = open_database(None)
    assert isinstance(database, SqliteDatabase)
    assert database.path == tmp_path / "data" / "turnout.db"
    monkeypatch.delenv("TURNOUT_DATA_DIR")
    assert default_sqlite_path() == tmp_path / "xdg" / "turnout" / "turnout.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_sqlite_path() == tmp_path / "home" / ".local" / "share" / "turnout" / "turnout.db"


@pytest.mark.parametrize("url", ["postgresql://u:p@db:5432/turnout", "postgres://db/turnout"])
def test_postgres_urls_of_both_spellings(url: str) -> None:
    assert isinstance(open_database(url), PostgresDatabase)


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite://relative.db", "sqlite:///", "redis://x"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_database(url)


def test_the_password_never_shows_and_the_schema_goes_to_the_search_path() -> None:
    database = PostgresDatabase("postgresql://turnout:s3cret@db:5432/turnout?sslmode=require&schema=team_a")
    assert "s3cret" not in database.display_url
    assert database.display_url.startswith("postgresql://***@db:5432/turnout")
    assert database.schema == "team_a"
    assert split_schema("postgresql://db/x?sslmode=require&schema=a") == ("postgresql://db/x?sslmode=require", "a")
    assert split_schema("postgresql://db/x") == ("postgresql://db/x", None)
