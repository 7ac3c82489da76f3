"""URLs that carry credentials (the cache's Redis URL, an upstream's base URL): checked, shown and named safely.

What Redis accepts is what redis-py reads: `redis_url_problem` runs redis-py's own parser and builds
(without connecting) the connection it would make, so a URL that passes here also opens at start-up.
On top, it refuses the URLs redis-py reads as something else than was meant: a password with a raw
`/`, `?`, `#` or `@` moves the rest of it into the port, path or fragment (`redis://:pa/ss@host` is
the host `""`, the port `pa`). No message here quotes any part of a URL.

`redact_url` hides every place a URL can hold a credential: the user and password (`user:pass@`,
`:pass@`, `pass@`), and every query value but the plain options (`db`, timeouts, ...), so
`?password=` and `?username=` too; `url_secrets` lists the secret values for by-value redaction.
"""

from __future__ import annotations

import re
import urllib.parse

__all__ = ["redact_url", "redis_url_problem", "url_secrets"]

_PLAIN_OPTIONS = frozenset(
    {
        "db",
        "protocol",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "timeout",
        "ssl_cert_reqs",
        "ssl_check_hostname",
        "ssl_min_version",
    }
)
"""Query options whose values are shown: numbers, switches and modes, never a credential."""
_DATABASE = re.compile(r"/?\d*/?")
_ENCODE_HINT = "percent-encode / ? # @ in a password or path as %2F %3F %23 %40"


def _split(url: str) -> tuple[str, str | None, str, str]:
    """(scheme, userinfo or None, host-and-path, query) without any URL parser's view of the userinfo.

    The userinfo is everything before the last `@`, wherever it is: a raw `/` in a password must not
    leave part of it in what is shown as the path.
    """
    scheme, _, rest = url.partition("://")
    userinfo: str | None = None
    if "@" in rest:  # before the fragment is cut: a raw `#` in a password must not end it there either
        userinfo, _, rest = rest.rpartition("@")
    where, _, query = rest.split("#", 1)[0].partition("?")
    return scheme, userinfo, where, query


def redact_url(url: str | None) -> str | None:
    """`url` without its user, password and non-plain query values (each replaced by `***`), for logs and messages."""
    if not url:
        return url
    if "://" not in url:
        return "***"
    scheme, userinfo, where, query = _split(url)
    shown = f"{scheme}://{'***@' if userinfo is not None else ''}{where}"
    if query:
        pairs = [pair.partition("=") for pair in query.split("&")]
        shown += "?" + "&".join(
            name + (eq and "=" + (value if urllib.parse.unquote(name) in _PLAIN_OPTIONS else "***"))
            for name, eq, value in pairs
        )
    return shown


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The secret values `url` holds, as written and decoded: the password (or a lone user), secret query values."""
    if not url or "://" not in url:
        return ()
    _, userinfo, _, query = _split(url)
    found: list[str] = []
    if userinfo:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)  # a lone `secret@` is read as a user, but often meant as the key
    for name, _, value in (pair.partition("=") for pair in query.split("&") if query):
        if urllib.parse.unquote(name) not in _PLAIN_OPTIONS and name != "username":
            found.append(value)
    decoded = [urllib.parse.unquote(value) for value in found] + [urllib.parse.unquote_plus(value) for value in found]
    return tuple(dict.fromkeys(value for value in [*found, *decoded] if value))


def redis_url_problem(url: str) -> str | None:
    """Why redis-py cannot open `url` as meant, or None when it can. The reason never quotes the URL."""
    # redis-py on first use: importing it takes half a second, and most processes never open a Redis URL.
    from redis.asyncio.connection import Connection, parse_url
    from redis.exceptions import RedisError

    scheme, _, rest = url.partition("://")
    if scheme not in ("redis", "rediss", "unix"):
        return "the URL must start with redis://, rediss:// or unix://"
    if "#" in rest:
        return f"a '#' ends the URL there; {_ENCODE_HINT}"
    netloc_end = min((rest.find(c) for c in "/?" if c in rest), default=len(rest))
    if "@" in rest[netloc_end:]:
        return f"an '@' after the host: the password or path holds a raw separator; {_ENCODE_HINT}"
    try:
        options = parse_url(url)
    except ValueError as exc:
        reason = str(exc)
        # redis-py's own messages name an option at most; urllib's may quote the port, part of a password.
        return (
            reason if reason.startswith("Invalid value for '") else f"its host or port cannot be read; {_ENCODE_HINT}"
        )
    if scheme != "unix" and not _DATABASE.fullmatch(urllib.parse.urlsplit(url).path):
        return f"the path must be a database number, as in /0; {_ENCODE_HINT}"
    connection_class = options.pop("connection_class", Connection)
    try:
        connection_class(**options)  # type: ignore[misc]  # builds the connection redis-py would open, unopened
    except TypeError:
        return "it holds a query option redis-py does not know"
    except (ValueError, RedisError) as exc:
        return f"redis-py refuses its options ({type(exc).__name__})"
    return None
