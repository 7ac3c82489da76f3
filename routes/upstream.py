"""`Upstream`: one OpenAI-compatible server, its key, and the pooled HTTP client that talks to it.

The hot path uses aiohttp's client: on this project's benchmark it serves about ten times the requests
per second of httpx's default pool (README, "Performance"). Foreign errors are translated here, once,
by `map_upstream_errors()`, so nothing above this module sees an aiohttp exception.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass

import aiohttp

from proxy.errors import UpstreamError, UpstreamTimeoutError, upstream_status_error

__all__ = ["Upstream", "UpstreamTimeouts", "map_upstream_errors", "new_session"]


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """How long to wait for an upstream, in seconds."""

    connect: float = 10.0
    """To open a connection."""
    read: float = 120.0
    """Between two reads of the response (a stream may run longer than this in total)."""
    total: float = 600.0
    """For a whole request, stream included."""


def new_session(timeouts: UpstreamTimeouts, *, max_connections: int = 1000) -> aiohttp.ClientSession:
    """A pooled client session with explicit timeouts and limits; the caller owns it and closes it."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read)
    # The caller's headers are forwarded as they are; aiohttp must not add its own User-Agent.
    return aiohttp.ClientSession(connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",))


@contextlib.contextmanager
def map_upstream_errors(name: str) -> Iterator[None]:
    """Translate the HTTP client's exceptions into `ProxyError`s: timeouts → 504, the rest → 502."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamTimeoutError(f"The upstream '{name}' did not answer in time.") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamError(f"The upstream '{name}' broke off its response.") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"Could not reach the upstream '{name}' ({type(exc).__name__}).") from exc


class Upstream:
    """One OpenAI-compatible upstream: where it is, how to authenticate, and the session to call it with.

    The session is shared and owned by whoever built it (the app's lifespan), which closes it.
    """

    __slots__ = ("_auth", "_session", "base_url", "name")

    def __init__(self, name: str, base_url: str, api_key: str | None, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = session

    def __repr__(self) -> str:
        return f"Upstream(name={self.name!r}, base_url={self.base_url!r})"

    def timeout(self, total: float | None) -> aiohttp.ClientTimeout:
        """This upstream's timeouts, with another total (a route's own) when one is given.

        Always a full `ClientTimeout`: aiohttp reads an explicit `timeout=None` as "no timeout at all".
        """
        base = self._session.timeout
        if total is None:
            return base
        return aiohttp.ClientTimeout(total=total, connect=base.connect, sock_read=base.sock_read)

    async def post(
        self, path: str, body: bytes, headers: Mapping[str, str], timeouts: aiohttp.ClientTimeout
    ) -> tuple[bytes, aiohttp.ClientResponse]:
        """POST a JSON body and return the body of a 2xx answer with its response.

        Raises:
            ProxyError: the upstream answered non-2xx (mapped by status) or could not be reached.
        """
        with map_upstream_errors(self.name):
            async with self._session.post(
                self.base_url + path, data=body, headers=self._headers(headers, json_body=True), timeout=timeouts
            ) as response:
                content = await response.read()
        if response.status >= 300:
            raise upstream_status_error(response.status, content, retry_after=response.headers.get("retry-after"))
        return content, response

    async def get(self, path: str, headers: Mapping[str, str]) -> bytes:
        """GET a JSON resource and return the body of a 2xx answer.

        Raises:
            ProxyError: the upstream answered non-2xx (mapped by status) or could not be reached.
        """
        with map_upstream_errors(self.name):
            async with self._session.get(self.base_url + path, headers=self._headers(headers)) as response:
                content = await response.read()
        if response.status >= 300:
            raise upstream_status_error(response.status, content, retry_after=response.headers.get("retry-after"))
        return content

    async def post_stream(
        self, path: str, body: bytes, headers: Mapping[str, str], timeouts: aiohttp.ClientTimeout
    ) -> AsyncGenerator[bytes, None]:
        """POST a JSON body and yield the response's bytes as they arrive.

        The first iteration raises the mapped error when the upstream answers non-2xx. Closing the
        iterator before the body's end (the client went away) closes the upstream connection.

        Raises:
            ProxyError: the upstream answered non-2xx, could not be reached, or broke off.
        """
        with map_upstream_errors(self.name):
            response = await self._session.post(
                self.base_url + path, data=body, headers=self._headers(headers, json_body=True), timeout=timeouts
            )
            try:
                if response.status >= 300:
                    content = await response.read()
                    retry_after = response.headers.get("retry-after")
                    raise upstream_status_error(response.status, content, retry_after=retry_after)
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                # Back to the pool when the body was read to its end; otherwise the connection is closed,
                # which is what stops the upstream's generation when our client has gone away.
                response.release()

    def _headers(self, headers: Mapping[str, str], *, json_body: bool = False) -> dict[str, str]:
        merged = {**headers, **self._auth}
        if json_body:
            merged["Content-Type"] = "application/json"
        return merged
