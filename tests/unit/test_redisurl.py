"""`proxy.wire.redisurl`: Redis URLs checked as redis-py reads them, shown without their secrets, secrets listed."""

from __future__ import annotations

import urllib.parse

import pytest
from redis.asyncio.connection import parse_url

from proxy.wire.redisurl import redact_url, redis_url_problem, url_secrets

PASSWORD = "s3cr/et+pa=ss#wd@x?y"  # noqa: S105 - a test value
ENC = urllib.parse.quote(PASSWORD, safe="")

# Every form redis-py reads a password (and a user) from, with the password percent-encoded as it must be.
ACCEPTED = [
    f"redis://:{ENC}@cache.internal:6379/0",
    f"redis://app-user:{ENC}@cache.internal:6379/2",
    f"rediss://:{ENC}@cache.internal:6380",
    f"rediss://app-user:{ENC}@cache.internal:6380/1?ssl_cert_reqs=none",
    f"redis://cache.internal:6379/0?password={ENC}",
    f"redis://cache.internal:6379/0?username=app-user&password={ENC}",
    f"redis://cache.internal:6379?db=3&password={ENC}",
    f"unix://:{ENC}@/run/redis/redis.sock?db=1",
    f"unix:///run/redis/redis.sock?db=1&password={ENC}",
    f"unix:///run/redis/redis.sock?username=app-user&password={ENC}",
    f"redis://{ENC}@cache.internal:6379/0",  # read as a user: often meant as the password
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_every_form_redis_py_reads_is_accepted_and_shown_without_its_secrets(url) -> None:
    options = parse_url(url)
    secret = options.get("password") or options.get("username")
    assert secret == PASSWORD  # what redis-py would authenticate with
    assert redis_url_problem(url) is None
    shown = redact_url(url)
    assert shown is not None
    for form in (PASSWORD, ENC, PASSWORD[:4], ENC[:6], "app-user"):
        assert form not in shown
    assert "cache.internal" in shown or "/run/redis/redis.sock" in shown
    assert "***" in shown
    assert PASSWORD in url_secrets(url)
    assert ENC in url_secrets(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:1/0", "redis://***@h:1/0"),
        ("rediss://user:pw@h:1", "rediss://***@h:1"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://h:1/0?password=pw&db=2&socket_timeout=0.5", "redis://h:1/0?password=***&db=2&socket_timeout=0.5"),
        ("redis://h:1/0?client_name=x&ssl_password=y", "redis://h:1/0?client_name=***&ssl_password=***"),
        ("redis://:pa/ss@h:1/0", "redis://***@h:1/0"),  # a raw `/`: the whole password still hidden
        ("redis://:pa#ss@h:1/0", "redis://***@h:1/0"),
        ("redis://h:1/0#frag", "redis://h:1/0"),
        ("not a url", "***"),
        (None, None),
        ("", ""),
    ],
)
def test_redact_url(url, shown) -> None:
    assert redact_url(url) == shown


def test_url_secrets_lists_passwords_as_written_and_decoded_but_not_plain_options() -> None:
    url = "redis://user:p%40ss@h:1/0?password=a+b%2Fc&db=2&username=someone"
    assert set(url_secrets(url)) == {"p%40ss", "p@ss", "a+b%2Fc", "a+b/c", "a b/c"}
    assert url_secrets("redis://h:1/0") == ()
    assert url_secrets(None) == ()
    assert url_secrets("https://api.openai.com/v1") == ()
    assert url_secrets("https://me:hunter2-secret@llm.internal/v1") == ("hunter2-secret",)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h:6379", "must start with redis://"),
        ("redis://:QQpa/ssZZ@127.0.0.1:6379/0", "an '@' after the host"),  # the issue's: serve exited 3
        ("redis://:QQpa?ssZZ@127.0.0.1:6379/0", "an '@' after the host"),
        ("redis://:QQpa#ssZZ@127.0.0.1:6379/0", "a '#' ends the URL"),
        ("redis://127.0.0.1:6379/0?password=QQpa#ssZZ", "a '#' ends the URL"),
        ("unix:///run/redis@main/redis.sock", "an '@' after the host"),
        ("redis://127.0.0.1:QQpaZZ/0", "its host or port cannot be read"),
        ("redis://127.0.0.1:99999/0", "its host or port cannot be read"),
        ("redis://[::1/0", "its host or port cannot be read"),
        ("redis://127.0.0.1:6379/QQpaZZ", "the path must be a database number"),
        ("redis://127.0.0.1:6379/0?db=QQpaZZ", "Invalid value for 'db' in connection URL."),
        ("redis://127.0.0.1:6379/0?QQpaZZ=x", "a query option redis-py does not know"),
        ("redis://127.0.0.1:6379/0?protocol=9", "redis-py refuses its options"),
    ],
)
def test_a_url_redis_py_cannot_open_as_meant_is_a_problem_that_quotes_none_of_it(url, reason) -> None:
    problem = redis_url_problem(url)
    assert problem is not None
    assert reason in problem
    for part in ("QQ", "ZZ", "99999", "::1"):
        assert part not in problem
