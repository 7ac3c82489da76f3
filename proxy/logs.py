"""Log formatting: one plain line per record, with anything that looks like an API key redacted.

Redacting at the formatter covers every log line, tracebacks of unexpected errors included, whatever
text an exception happened to carry.
"""

from __future__ import annotations

import logging

from proxy.errors import redact

__all__ = ["LOG_FORMAT", "RedactingFormatter"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """A `logging.Formatter` whose output never contains an API key."""

    def format(self, record: logging.LogRecord) -> str:
        """Format `record` as usual, then redact keys from the whole text."""
        return redact(super().format(record))
