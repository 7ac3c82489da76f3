"""The policy file's `cache:` block and each rule's `cache:`: parsed, checked, and never showing a password."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from policies import CacheRule, PolicyError, load_policy
from policies.cacherule import DEFAULT_SEMANTIC_THRESHOLD
from proxy.config.errors import ConfigError
from proxy.config.sections import CacheSettings
from proxy.config.settings import load_settings
from proxy.wire.redisurl import redact_url

ROUTES = ["gpt4", "ft"]


def locate(path: Sequence[str | int]) -> str:
    return "policy.yaml:" + ".".join(str(part) for part in path)


def rule_cache(value: object) -> CacheRule:
    rules = [{"name": "r", "when": {"model": "x"}, "route": "gpt4", "cache": value}, {"name": "d", "route": "ft"}]
    engine = load_policy(rules, ROUTES, locate=locate, rng=random.Random(0))
    return engine._rules[0].cache  # the compiled rule, as the engine keeps it


def rule_error(value: object) -> str:
    with pytest.raises(PolicyError) as caught:
        rule_cache(value)
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "read", "write"),
    [
        (True, True, True),
        (False, False, False),
        ("on", True, True),
        ("off", False, False),
        ("read", True, False),
        ("write", False, True),
    ],
)
def test_a_mode_alone(value, read, write) -> None:
    cache = rule_cache(value)
    assert (cache.read, cache.write) == (read, write)
    assert cache.deterministic_only is True
    assert cache.semantic_threshold is None


def test_a_mapping_with_every_key() -> None:
    cache = rule_cache({"mode": "on", "ttl": 90, "deterministic_only": False, "semantic": {"threshold": 0.9}})
    assert cache == CacheRule(read=True, write=True, ttl=90.0, deterministic_only=False, semantic_threshold=0.9)
    assert rule_cache({"semantic": True}).semantic_threshold == DEFAULT_SEMANTIC_THRESHOLD


def test_a_rule_without_cache_reads_and_writes_deterministic_requests() -> None:
    engine = load_policy([{"name": "d", "route": "ft"}], ROUTES, locate=locate)
    assert engine._rules[0].cache == CacheRule()
    assert engine.semantic_cache is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sometimes", "policy.yaml:rules.0.cache.mode: rule 'r': cache mode must be one of: on, off, read, write"),
        ({"ttl": 0}, "policy.yaml:rules.0.cache.ttl: rule 'r': ttl must be a number of seconds > 0"),
        ({"ttl": "1h"}, "ttl must be a number of seconds > 0, got '1h'"),
        ({"tll": 5}, "policy.yaml:rules.0.cache.tll: rule 'r': unknown key 'tll' in cache"),
        ({"semantic": {"threshold": 1.5}}, "threshold must be a number with 0 < threshold <= 1"),
        ({"semantic": {"thresh": 0.9}}, "unknown key 'thresh' in semantic"),
        ({"semantic": "yes"}, "semantic must be true, false or"),
        ({"deterministic_only": "no"}, "deterministic_only must be true or false"),
    ],
)
def test_a_bad_rule_cache_names_the_file_line_and_rule(value, message) -> None:
    assert message in rule_error(value)


def write(tmp_path: Path, cache: str) -> dict[str, str]:
    path = tmp_path / "policy.yaml"
    path.write_text(f"upstreams:\n  sim: {{base_url: http://127.0.0.1:1/v1}}\ncache: {cache}\n", encoding="utf-8")
    return {"TURNOUT_CONFIG": str(path), "REDIS_PASSWORD": "hunter2-secret"}


def test_the_default_cache_is_in_memory() -> None:
    cache = load_settings({}).deployment.cache
    assert cache == CacheSettings()
    assert cache.enabled
    assert not cache.uses_redis


def test_the_url_is_checked_on_its_own_line(tmp_path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("cache:\n  ttl: 60\n  url: redis://:pa/ss-hunter2@cache:6379/0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings({"TURNOUT_CONFIG": str(path)})
    assert str(caught.value).startswith(f"{path}:3: cache.url is not a Redis URL: ")
    assert "hunter2" not in str(caught.value)
    assert "pa/ss" not in str(caught.value)


def test_a_url_means_redis_and_its_password_never_shows(tmp_path) -> None:
    env = write(tmp_path, '{url: "redis://:${REDIS_PASSWORD}@cache.internal:6379/2", ttl: 60, timeout: 0.02}')
    cache = load_settings(env).deployment.cache
    assert cache.uses_redis
    assert cache.url == "redis://:hunter2-secret@cache.internal:6379/2"
    assert (cache.ttl, cache.timeout) == (60.0, 0.02)
    assert "hunter2" not in repr(cache)
    assert "hunter2" not in repr(load_settings(env))
    assert "hunter2-secret" in load_settings(env).secrets()  # for redaction by value


def test_a_query_password_never_shows_either(tmp_path) -> None:
    env = write(tmp_path, '{url: "redis://cache.internal:6379/2?password=${REDIS_PASSWORD}"}')
    settings = load_settings(env)
    assert "hunter2" not in repr(settings.deployment.cache)
    assert "hunter2-secret" in settings.secrets()


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:pw@h:1/0", "redis://***@h:1/0"),
        ("rediss://user:pw@h:1", "rediss://***@h:1"),
        ("redis://h:1/0", "redis://h:1/0"),
        (None, None),
    ],
)
def test_redact_url(url, redacted) -> None:
    assert redact_url(url) == redacted


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("{backend: redis}", "policy.yaml:3: cache: the redis backend needs a `url`"),
        ("{backend: disk}", "cache.backend"),
        ('{url: "http://cache:6379"}', "cache.url"),
        ("{max_bytes: 0}", "cache.max_bytes"),
        ("{lock_lease: 0}", "cache.lock_lease"),
        ("{colour: blue}", "policy.yaml:3: cache: Object contains unknown field `colour`"),
        # A raw `/` in the password: redis-py reads "hunter2" as the port (`turnout serve` exited 3 on it).
        ('{url: "redis://:${REDIS_PASSWORD}/x@cache:6379/0"}', "policy.yaml:3: cache.url is not a Redis URL: an '@'"),
        ('{url: "redis://cache:6379/0?pasword=${REDIS_PASSWORD}"}', "policy.yaml:3: cache.url is not a Redis URL: "),
    ],
)
def test_a_bad_cache_block_names_the_file_and_key(tmp_path, cache, message) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, cache))
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_lock_lease_is_a_few_seconds_and_lock_ttl_keeps_its_name(tmp_path) -> None:
    assert (CacheSettings().lock_lease, CacheSettings().lock_ttl) == (3.0, 30.0)
    cache = load_settings(write(tmp_path, "{url: redis://h:1/0, lock_ttl: 90, lock_lease: 1.5}")).deployment.cache
    assert (cache.lock_ttl, cache.lock_lease) == (90.0, 1.5)
