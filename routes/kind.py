"""What a route kind is: the settings every kind's policy-file entry extends, and what they are checked and built with.

A route kind is one module: its `Route` class and its settings, a subclass of `RouteSettings` tagged with
the kind's name (`class RagSettings(RouteSettings, tag="rag")`), which says what the entry may hold, how
it is checked against the rest of the file (`check`) and how its route is built (`build`). The kinds are
listed in `routes.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec

from routes.base import Route
from routes.knowledge.index import KnowledgeIndex
from routes.knowledge.retrieval import Retriever
from routes.upstream import Upstream

__all__ = [
    "CONVERSATIONS",
    "ENDPOINT_KINDS",
    "BuildContext",
    "CheckContext",
    "EndpointKind",
    "RouteSettings",
    "Seconds",
]

Seconds = Annotated[float, msgspec.Meta(gt=0)]

EndpointKind = Literal["chat", "responses", "embeddings", "completions"]
"""The endpoint kinds Turnout routes (each a codec's `kind`), as a route's `endpoints` setting names them."""
ENDPOINT_KINDS: tuple[EndpointKind, ...] = ("chat", "responses", "embeddings", "completions")
CONVERSATIONS: tuple[EndpointKind, ...] = ("chat", "responses")
"""The conversation kinds: what a policy's rules are written for, and what a route serves unless it says otherwise."""


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What one route's settings are checked against when the policy file loads."""

    upstreams: Sequence[str]
    """The upstreams' names, in the file's order."""
    routes: Mapping[str, RouteSettings]
    """Every route's settings, this one's included (those that answer themselves first)."""
    fail: Callable[[Sequence[str | int], str], Exception]
    """The error to raise for a message about the value at a key path inside this route's entry (the error
    names the file and the line)."""
    load_index: Callable[[str, Sequence[str | int]], KnowledgeIndex]
    """This route's knowledge index, from a directory relative to the policy file, checked against the
    embedder; the second argument is the key path (inside the entry) that names the directory, for errors."""


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What routes are built with."""

    upstreams: Mapping[str, Upstream]
    """Every upstream, by name."""
    routes: Mapping[str, Route]
    """The routes built so far: every route that answers itself, before any that answers with another."""
    retrievers: Mapping[str, Retriever]
    """The retriever over each route's knowledge index (`RouteSettings.check` loaded it), by route name."""


class RouteSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    """A route as the policy file describes it; each kind extends it, tagged with its name (`kind: rag`).

    Every kind also defines `build(name, context: BuildContext) -> Route`, the route its settings describe.
    """

    @property
    def model(self) -> str | None:
        """The upstream model this entry names (None: the caller's own, or that of the route it answers with)."""
        return None

    @property
    def answers_with(self) -> str | None:
        """The route this one hands its requests to (None: it answers them itself)."""
        return None

    def check(self, name: str, context: CheckContext) -> KnowledgeIndex | None:
        """Check these settings against the rest of the file; returns the knowledge index the route searches.

        A problem raises the error `context.fail` makes for it (or the one `context.load_index` raises).
        """
        return None
