"""The route kinds, in one table: the policy file's routes parsed by their `kind`, then built.

`AnyRouteSettings` lists every kind's settings (each a tagged `routes.kind.RouteSettings`); msgspec picks
the one an entry's `kind` names, and an entry without `kind` is of `DEFAULT_KIND`. A new route kind is a
module (its route and its settings, with `check` and `build`) and one more member of that union.
"""

from __future__ import annotations

from collections.abc import Mapping

from routes.base import Route
from routes.kind import BuildContext, RouteSettings
from routes.knowledge.retrieval import Retriever
from routes.openai_chat import OpenAIChatSettings
from routes.rag import RagSettings
from routes.upstream import Upstream

__all__ = ["DEFAULT_KIND", "AnyRouteSettings", "build_routes", "in_build_order", "kind_of", "tagged"]

AnyRouteSettings = OpenAIChatSettings | RagSettings
"""A route entry of any kind: the registry. Add a kind's settings here."""

DEFAULT_KIND = "openai"
"""The kind of an entry that says none: an OpenAI-compatible upstream."""


def kind_of(settings: RouteSettings) -> str:
    """The name of the kind `settings` are of (`openai`, `rag`, ...)."""
    return str(settings.__struct_config__.tag)


def tagged(entry: object) -> object:
    """A route entry as the policy file gives it, with `kind: openai` when it names no kind (to convert)."""
    if isinstance(entry, Mapping) and "kind" not in entry:
        return {"kind": DEFAULT_KIND, **entry}
    return entry


def in_build_order(routes: Mapping[str, AnyRouteSettings]) -> dict[str, AnyRouteSettings]:
    """`routes` with those that answer themselves first, each group in its own order: the order they are built in.

    A route that answers with another (RAG) is built after it; so the server lists routes in this order too.
    """
    first = {name: settings for name, settings in routes.items() if settings.answers_with is None}
    return first | {name: settings for name, settings in routes.items() if name not in first}


def build_routes(
    routes: Mapping[str, AnyRouteSettings], upstreams: Mapping[str, Upstream], retrievers: Mapping[str, Retriever]
) -> dict[str, Route]:
    """Every route of a checked policy file (`routes` in build order, `in_build_order`), by name, in that order.

    `retrievers` holds the retriever over each knowledge index the routes' checks loaded.
    """
    built: dict[str, Route] = {}
    context = BuildContext(upstreams=upstreams, routes=built, retrievers=retrievers)
    for name, settings in routes.items():
        built[name] = settings.build(name, context)
    return built
