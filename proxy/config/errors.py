"""`ConfigError`, the one error an invalid configuration raises, and the reading of msgspec's error paths.

Every configuration problem (a file that cannot be read or parsed, a value of the wrong type, a name that
refers to nothing, a variable that is not set) is a `ConfigError` whose message says where: the file and
line (`policy.yaml:12: routes.docs.top_k: Expected int >= 1`), or the environment variable. The file and
line come from `proxy.config.yamlsource.YamlDocument`, which turns a msgspec error into such a message
with `explain` below. Leaf: imports nothing of the project.
"""

from __future__ import annotations

import re

import msgspec

__all__ = ["ConfigError", "explain"]


class ConfigError(Exception):
    """The configuration is invalid; the message says where (`file:line`, or the variable) and why."""


_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def explain(exc: msgspec.ValidationError) -> tuple[tuple[str | int, ...], str]:
    """The key path a msgspec validation error names, and what it says is wrong there.

    `Expected int >= 1 - at $.timeout[0]` → `(("timeout", 0), "Expected int >= 1")`; an error about the
    value itself (no ` - at ...`) has the empty path.
    """
    message = str(exc)
    match = _AT.search(message)
    path = match.group(1) if match else ""
    keys = tuple(int(index) if index else name for name, index in _PART.findall(path))
    return keys, _AT.sub("", message)
