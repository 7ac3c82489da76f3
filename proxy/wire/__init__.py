"""Leaf value types of the wire: OpenAI request and answer views, errors, SSE, bounds, redaction.

Imports nothing of the project outside `proxy.wire`: the only part of `proxy` that `routes` and
`policies` may import.
"""
