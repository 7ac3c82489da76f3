"""The clients teams point at Turnout (LangChain, LlamaIndex, the OpenAI Agents SDK), driven against the real server.

They run in the openai-2 venv (`make test-openai2`; the `clients` extra of pyproject.toml), never in the main one:
LangChain and LlamaIndex pin openai<3. The processes are the e2e suite's (`tests/e2e/conftest.py`): `turnout serve`
without a policy in front of `turnout simulate`, both on loopback. Each client is built the way a team would, with
only its `base_url` (and a key) changed.

Nothing these packages do may reach outside the machine at run time: tiktoken downloads its encodings, LangChain's
`OpenAIEmbeddings` calls tiktoken (or Hugging Face) unless `check_embedding_ctx_length=False`, and the Agents SDK
exports traces to OpenAI. So every test here runs behind `loopback_only`, which refuses (and fails the test for) any
name lookup but the loopback's, even one the library caught and went on from.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import CLIENT_KEY, RunningProcess, simulator, simulator_call, turnout

__all__ = ["CLIENT_KEY", "simulator", "simulator_call", "turnout"]

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class OutsideConnectionError(OSError):
    """A client library tried to reach a host outside the machine."""


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse every name lookup but the loopback's, and fail the test afterwards if any was tried."""
    tried: list[str] = []
    lookup = socket.getaddrinfo

    def loopback_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            tried.append(name)
            raise OutsideConnectionError(f"a client test may only reach the loopback, not {name}")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_getaddrinfo)
    # Nothing from the developer's own environment: no key, no base URL, no tracing, no default model.
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_DEFAULT_MODEL",
        "LANGSMITH_TRACING",
        "LANGCHAIN_TRACING_V2",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    yield tried
    assert not tried, f"the client tried to reach outside the machine: {sorted(set(tried))}"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """The connections a client's sync calls use, closed after the test.

    Given to every client: left to themselves LangChain and LlamaIndex keep theirs open (LangChain caches one for the
    whole process), which the interpreter reports as unclosed sockets at exit.
    """
    with httpx.Client(timeout=20) as client:
        yield client


@pytest.fixture
async def async_http() -> AsyncIterator[httpx.AsyncClient]:
    """The connections a client's async calls use, closed after the test (in the test's event loop)."""
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@pytest.fixture(scope="session")
def base_url(turnout: RunningProcess) -> str:
    """Turnout's OpenAI base URL: the one line a team changes."""
    return f"{turnout.origin}/v1"
