"""The policy file's `auth` block and `database_url`, `TURNOUT_AUTH`, `TURNOUT_DATABASE_URL` and `TURNOUT_ADMIN_KEY`."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.errors import ConfigError
from proxy.config.settings import Settings, load_settings

pytestmark = pytest.mark.unit

BASE = "upstreams:\n  openai: {base_url: https://example.test/v1}\n"


def settings_of(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "turnout.yaml"
    path.write_text(BASE + text, encoding="utf-8")
    return load_settings({"TURNOUT_CONFIG": str(path), **env})


def test_auth_is_off_by_default(tmp_path: Path) -> None:
    auth = settings_of(tmp_path, "").deployment.auth
    assert auth.mode == "off"
    assert not auth.keys
    assert not load_settings({}).deployment.auth.keys


@pytest.mark.parametrize(("text", "keys"), [("auth: keys", True), ("auth: off", False), ("auth: 'off'", False)])
def test_auth_shorthand(tmp_path: Path, text: str, keys: bool) -> None:
    assert settings_of(tmp_path, text + "\n").deployment.auth.keys is keys


def test_auth_block_with_teams(tmp_path: Path) -> None:
    text = "auth:\n  mode: keys\n  refresh: 0.5\n  teams:\n    support: {rpm: 60, budget_usd: 25, period: day}\n"
    auth = settings_of(tmp_path, text).deployment.auth
    assert auth.keys
    assert auth.refresh == 0.5
    assert auth.teams["support"].rpm == 60
    assert auth.teams["support"].period == "day"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("auth: maybe\n", "auth"),
        ("auth: {mode: keys, teams: {support: {rpm: 0}}}\n", "auth.teams.support.rpm"),
        ("auth: {mode: keys, colour: red}\n", "colour"),
        ("auth: {redis_url: 'http://x'}\n", "auth.redis_url"),
        ("database_url: mysql://db/turnout\n", "database_url"),
    ],
)
def test_bad_auth_settings_name_the_key(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        settings_of(tmp_path, text)


def test_the_environment_wins(tmp_path: Path) -> None:
    settings = settings_of(
        tmp_path,
        "auth: off\ndatabase_url: sqlite:///file.db\n",
        TURNOUT_AUTH="keys",
        TURNOUT_DATABASE_URL="postgresql://turnout:pw-db-secret@db/turnout",
        TURNOUT_ADMIN_KEY="admin-secret-0123456789",
    )
    assert settings.deployment.auth.keys
    assert settings.deployment.database_url == "postgresql://turnout:pw-db-secret@db/turnout"
    assert "pw-db-secret" in settings.secrets()
    assert "admin-secret-0123456789" in settings.secrets()
    assert "admin-secret" not in repr(settings)


@pytest.mark.parametrize(("name", "value"), [("TURNOUT_AUTH", "on"), ("TURNOUT_DATABASE_URL", "db.example")])
def test_bad_environment_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})
