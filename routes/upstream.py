"""`Upstream`: one OpenAI-compatible server, its key, and the pooled HTTP client that talks to it.

The hot path uses aiohttp's client: on this project's benchmark it serves about ten times the requests
per second of httpx's default pool (README, "Performance"). Foreign errors are translated here, once,
by `map_upstream_errors()`, so nothing above this module sees an aiohttp exception.

Two rules hold for everything that passes through an `Upstream`, whoever calls it:

- the URL is its base URL plus an `UpstreamPath`, the one check of paths and path parameters, so that
  a caller's model id (or, in a pass-through, a caller's whole path) cannot reach another endpoint
  with Turnout's key;
- what comes back (bodies, error fields, `retry-after`) has the secrets of its `Redactor` removed.
"""

from __future__ import annotations

import contextlib
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from proxy.wire.errors import InvalidPathError, ProxyError, UpstreamError, UpstreamTimeoutError, upstream_status_error
from proxy.wire.redaction import Redactor

__all__ = ["Forwarded", "Upstream", "UpstreamPath", "UpstreamTimeouts", "map_upstream_errors", "new_session"]

_SEGMENT_SAFE = ":@"
"""Kept as they are in a segment (with letters, digits and `-._~`): `ft:gpt-4o-mini:acme::abc` reads as sent.
Everything else is percent-encoded, sub-delimiters included (`;` means a path parameter to some servers)."""
_FORBIDDEN = re.compile(r"[/\\\x00-\x1f\x7f]")
"""Never inside one segment: a slash or backslash (a separator to some server on the way, even encoded),
or a control character."""
_RAW_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
"""What a client's raw path may hold at all (RFC 3986 `pchar` and `/`), before it is decoded."""
_RAW_QUERY = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/?\[\]]*")
"""What a client's raw query may hold (RFC 3986 `query`, and the brackets of `include[]=` sent unencoded)."""
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
MAX_TARGET = 2048
"""The longest path and query sent upstream, encoded (OpenAI's own paths are well under 200)."""


class UpstreamPath:
    """A path (and query) under an upstream's base URL that cannot leave the endpoint it names.

    The one rule for every path and parameter bound for an upstream: each segment is checked (not
    empty, not `.` or `..`, no slash or backslash, no control character) and percent-encoded as one
    segment, so `?` and `#` stay data; the query is re-encoded from its decoded pairs. Built from
    segments (`UpstreamPath("models", model_id)`) or, for a pass-through, from the path and query a
    client sent (`UpstreamPath.from_client`), where an encoded slash or dot segment is refused too.

    Raises (on construction):
        InvalidPathError: a segment or the query breaks the rule; nothing is sent.
    """

    __slots__ = ("target",)

    def __init__(self, *segments: str, query: Sequence[tuple[str, str]] = ()) -> None:
        """The path `/seg1/seg2...` relative to the base URL, with `query` as its query string."""
        if not segments:
            raise InvalidPathError("An upstream path needs at least one segment.")
        for segment in segments:
            _check_segment(segment)
        target = "/" + "/".join(urllib.parse.quote(segment, safe=_SEGMENT_SAFE) for segment in segments)
        if query:
            target += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="")
        if len(target) > MAX_TARGET:
            raise InvalidPathError(f"The path is longer than {MAX_TARGET} characters.")
        self.target = target
        """Path and query, encoded, to append to the base URL (starts with `/`)."""

    @classmethod
    def from_client(cls, raw_path: str, raw_query: str = "") -> UpstreamPath:
        """A client's path relative to the base (`files/file-abc/content`), as sent: still percent-encoded.

        For a pass-through: the path after `/v1` and the query string exactly as they came on the wire
        (ASGI `raw_path` and `query_string`), decoded here once, so that `%2F` or `%2e%2e` can be refused.
        """
        for part, allowed in ((raw_path, _RAW_PATH), (raw_query, _RAW_QUERY)):
            if not allowed.fullmatch(part) or _BAD_ESCAPE.search(part):
                raise InvalidPathError("The path holds characters or escapes that a URL cannot.")
        try:
            segments = [urllib.parse.unquote(part, errors="strict") for part in raw_path.removeprefix("/").split("/")]
            query = urllib.parse.parse_qsl(raw_query, keep_blank_values=True, errors="strict", max_num_fields=64)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidPathError("The path or query is not valid percent-encoded UTF-8.") from exc
        return cls(*segments, query=query)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UpstreamPath) and other.target == self.target

    def __hash__(self) -> int:
        return hash(self.target)

    def __repr__(self) -> str:
        return f"UpstreamPath({self.target!r})"


def _check_segment(segment: str) -> None:
    if segment in ("", ".", ".."):
        what = "an empty segment" if not segment else f"the segment '{segment}'"
        raise InvalidPathError(f"A path to an upstream cannot hold {what}.")
    if _FORBIDDEN.search(segment):
        raise InvalidPathError("A path parameter cannot hold a slash, a backslash or a control character.")


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """How long to wait for an upstream, in seconds."""

    connect: float = 10.0
    """To open a connection."""
    read: float = 120.0
    """Between two reads of the response (a stream may run longer than this in total)."""
    total: float = 600.0
    """For a whole request, stream included."""


def new_session(
    timeouts: UpstreamTimeouts, *, max_connections: int = 1000, hooks: Sequence[aiohttp.TraceConfig] = ()
) -> aiohttp.ClientSession:
    """A pooled client session with explicit timeouts and limits; the caller owns it and closes it.

    `hooks`: aiohttp's request hooks (the attempts' spans when tracing is on); none costs nothing.
    """
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=timeouts.total, connect=timeouts.connect, sock_read=timeouts.read)
    # The caller's headers are forwarded as they are; aiohttp must not add its own User-Agent.
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("User-Agent",), trace_configs=list(hooks) or None
    )


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


class Forwarded:
    """An upstream's answer to a forwarded request, whatever its status: status and headers now, the body as it comes.

    Its bytes are the upstream's, unredacted and as encoded: whoever relays them decides what to redact.
    """

    __slots__ = ("_name", "_response", "headers", "status")

    def __init__(self, name: str, response: aiohttp.ClientResponse) -> None:
        self._name, self._response = name, response
        self.status = response.status
        self.headers: tuple[tuple[bytes, bytes], ...] = response.raw_headers
        """The response's headers as they came (lower-case or not, repeated ones kept)."""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, in reads of whatever size came (never the whole body at once).

        Raises:
            ProxyError: the upstream broke off, stalled past its read timeout, or the connection failed.
        """
        content = self._response.content
        with map_upstream_errors(self._name):
            if self._response.content_length is None:  # chunked, or up to the connection's end
                async for chunk in content.iter_any():
                    yield chunk
                return
            # With a length, one socket read at a time: `iter_any` joins the reads buffered meanwhile into
            # one new `bytes`, a third copy of most of the body, and the relay is CPU-bound (a 100 MB download:
            # 0.062 → 0.053 s of Turnout's CPU, 970 → 1,040 MB/s, means of 6 runs of 20, 2026-12-03). Chunked,
            # reads end at each chunk's end, and the extra sends cost more than the join (0.079 → 0.094 s).
            async for chunk, _ in content.iter_chunks():
                if chunk:
                    yield chunk

    async def head(self, limit: int) -> tuple[bytes, bool]:
        """Up to `limit` bytes of the body, and whether that was the whole of it (the rest stays in `chunks`)."""
        with map_upstream_errors(self._name):
            data = await self._response.content.read(limit)
            while len(data) < limit and not self._response.content.at_eof():
                more = await self._response.content.read(limit - len(data))
                if not more:
                    break
                data += more
            return data, self._response.content.at_eof()


class Upstream:
    """One OpenAI-compatible upstream: where it is, how to authenticate, and the session to call it with.

    The session is shared and owned by whoever built it (the app's lifespan), which closes it.
    """

    __slots__ = ("_auth", "_session", "base_url", "name", "redactor")

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None,
        session: aiohttp.ClientSession,
        *,
        redactor: Redactor | None = None,
    ) -> None:
        """`redactor`: the secrets Turnout holds (its own key is always among them)."""
        self.name = name
        self.base_url = str(URL(base_url.rstrip("/")))  # encoded once: paths are appended to it as they are
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session = session
        own = Redactor([api_key] if api_key else [])
        self.redactor = own if redactor is None else redactor | own
        """Removes the secrets from what this upstream sends back; routes use it on what they relay."""

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

    def url(self, path: UpstreamPath) -> URL:
        """The full URL of `path` on this upstream: always under its base URL, sent exactly as built."""
        return URL(self.base_url + path.target, encoded=True)

    def _status_error(self, response: aiohttp.ClientResponse, content: bytes) -> ProxyError:
        retry_after = response.headers.get("retry-after")
        return upstream_status_error(response.status, content, retry_after=retry_after, redactor=self.redactor)

    async def post(
        self, path: UpstreamPath, body: bytes, headers: Mapping[str, str], timeouts: aiohttp.ClientTimeout
    ) -> tuple[bytes, aiohttp.ClientResponse]:
        """POST a JSON body and return the body of a 2xx answer (secrets removed) with its response.

        Raises:
            ProxyError: the upstream answered non-2xx (mapped by status) or could not be reached.
        """
        with map_upstream_errors(self.name):
            async with self._session.post(
                self.url(path), data=body, headers=self._headers(headers, json_body=True), timeout=timeouts
            ) as response:
                content = await response.read()
        if response.status >= 300:
            raise self._status_error(response, content)
        return self.redactor.data(content), response

    async def get(self, path: UpstreamPath, headers: Mapping[str, str]) -> bytes:
        """GET a JSON resource and return the body of a 2xx answer (secrets removed).

        Raises:
            ProxyError: the upstream answered non-2xx (mapped by status) or could not be reached.
        """
        with map_upstream_errors(self.name):
            async with self._session.get(self.url(path), headers=self._headers(headers)) as response:
                content = await response.read()
        if response.status >= 300:
            raise self._status_error(response, content)
        return self.redactor.data(content)

    async def post_stream(
        self, path: UpstreamPath, body: bytes, headers: Mapping[str, str], timeouts: aiohttp.ClientTimeout
    ) -> AsyncGenerator[bytes, None]:
        """POST a JSON body and yield the response's bytes as they arrive.

        The first iteration raises the mapped error when the upstream answers non-2xx. Closing the
        iterator before the body's end (the client went away) closes the upstream connection. The
        bytes are raw reads, which may cut a secret in two: the caller redacts whole events
        (`redactor.data`), as `OpenAIChatRoute` does.

        Raises:
            ProxyError: the upstream answered non-2xx, could not be reached, or broke off.
        """
        with map_upstream_errors(self.name):
            response = await self._session.post(
                self.url(path), data=body, headers=self._headers(headers, json_body=True), timeout=timeouts
            )
            try:
                if response.status >= 300:
                    content = await response.read()
                    raise self._status_error(response, content)
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                # Back to the pool when the body was read to its end; otherwise the connection is closed,
                # which is what stops the upstream's generation when our client has gone away.
                response.release()

    async def relay(
        self, method: str, path: UpstreamPath, headers: Mapping[str, str], body: bytes | None = None
    ) -> tuple[int, bytes, str]:
        """Send one small request (a JSON `body`, or none) and return the answer whatever its status.

        For the resources a caller addresses by id on the upstream that holds them (a stored response, its
        input items): the upstream's own status, body (secrets removed) and content type go back as they
        came, a 404 included.

        Raises:
            ProxyError: the upstream could not be reached or did not answer in time (502, 504).
        """
        with map_upstream_errors(self.name):
            async with self._session.request(
                method, self.url(path), data=body, headers=self._headers(headers, json_body=body is not None)
            ) as response:
                content = await response.read()
        content_type = response.headers.get("content-type", "application/json")
        return response.status, self.redactor.data(content), content_type

    @contextlib.asynccontextmanager
    async def forward(
        self, method: str, path: UpstreamPath, headers: Mapping[str, str], body: AsyncIterable[bytes] | None
    ) -> AsyncIterator[Forwarded]:
        """Send a request as it came (a pass-through) and yield the answer as soon as its headers are in.

        `body` is streamed as it is produced, never held whole: with `content-length` in `headers` it goes
        out with that length, else chunked. `headers` are sent as given (with this upstream's key): the HTTP
        client adds no content type or encoding of its own, and does not decode the answer, so a compressed
        body stays compressed. Leaving the block before the body's end closes the connection (which is how
        an upstream learns that the client went away); read to its end, the connection goes back to the pool.
        The session's timeouts apply: a stall longer than the read timeout is a 504.

        Raises:
            ProxyError: the upstream could not be reached (502) or did not answer in time (504).
        """
        sent = {name.lower() for name in headers}
        skip = [name for name in ("Content-Type", "Accept-Encoding") if name.lower() not in sent]
        with map_upstream_errors(self.name):
            response = await self._session.request(
                method,
                self.url(path),
                data=body,
                headers=self._headers(headers),
                skip_auto_headers=skip,
                auto_decompress=False,
            )
        try:
            yield Forwarded(self.name, response)
        finally:
            response.release()

    def _headers(self, headers: Mapping[str, str], *, json_body: bool = False) -> dict[str, str]:
        merged = {**headers, **self._auth}
        if json_body:
            merged["Content-Type"] = "application/json"
        return merged
