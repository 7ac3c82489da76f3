"""The traffic log: every exchange, its decision and (where the policy says) its redacted content, off the request path.

`Exchange` is one logged exchange; `TrafficStore` is where they live (SQLite, PostgreSQL or JSONL files,
`open_traffic_store()`).
"""

from proxy.traffic.record import Exchange
from proxy.traffic.store import TrafficStore, TrafficStoreError, open_traffic_store

__all__ = ["Exchange", "TrafficStore", "TrafficStoreError", "open_traffic_store"]
