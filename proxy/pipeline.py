"""`ChatPipeline`: the explicit path of a chat request (decide → dispatch → account). No framework types."""

from __future__ import annotations

import logging

from proxy.schemas import Usage
from proxy.streaming import Relay, open_relay
from routes import ChatCall, Completion, Route

__all__ = ["ChatPipeline"]

logger = logging.getLogger("turnout.pipeline")


class ChatPipeline:
    """Answers chat calls through a route and accounts for the tokens they used.

    Until policy files arrive every call takes the one configured route, with the caller's `model`.
    """

    __slots__ = ("route",)

    def __init__(self, route: Route) -> None:
        self.route = route

    async def complete(self, call: ChatCall) -> Completion:
        """Answer `call` in one response."""
        completion = await self.route.complete(call)
        if completion.usage is not None:
            self._account(call, completion.usage)
        return completion

    async def stream(self, call: ChatCall) -> Relay:
        """Answer `call` as SSE bytes; an error before the first event raises here instead."""
        return await open_relay(
            self.route.stream(call),
            wants_usage=call.request.wants_usage_chunk,
            on_usage=lambda usage: self._account(call, usage),
        )

    def _account(self, call: ChatCall, usage: Usage) -> None:
        # Cost and metrics hang off this one place, shared by both modes.
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "request %s on route %s used %d prompt + %d completion tokens",
                call.headers.get("x-request-id"),
                self.route.name,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
