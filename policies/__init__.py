"""Decides which route a request takes.

Empty until policy files land (issue 3): without one, every request takes the single configured
upstream with the caller's own `model`, as `proxy.pipeline.ChatPipeline` documents.
"""

__all__: list[str] = []
