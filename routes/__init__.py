"""Destinations a request can be sent to: OpenAI-compatible upstreams and the simulated one."""

from routes.base import ChatCall, Completion, Route
from routes.openai_chat import OpenAIChatRoute
from routes.upstream import Upstream, UpstreamTimeouts, new_session

__all__ = ["ChatCall", "Completion", "OpenAIChatRoute", "Route", "Upstream", "UpstreamTimeouts", "new_session"]
