"""The cases file of `turnout test` and `turnout tune`: requests, each with the route (and rule) it must take.

It is read with PyYAML's C loader where libyaml is present (`yaml.CSafeLoader`; 5,500 cases load 4 to 6
times faster than with the pure-Python `SafeLoader`, the fallback: `tests.bench.cases_load`), then
checked by msgspec.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from proxy.config.errors import ConfigError
from proxy.endpoints.chat import CHAT
from routes import Call

__all__ = ["LOADER", "Case", "case_call", "load_cases"]

LOADER: type[yaml.CSafeLoader | yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""The C loader when PyYAML was built with libyaml, else the Python one (the same YAML, safely)."""


class Case(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One case: a chat request body and where it must go."""

    name: str
    request: dict[str, Any]
    expect: str
    """The route the request must take."""
    rule: str | None = None
    """The rule that must send it there, when given."""
    headers: dict[str, str] = {}
    caller: str | None = None


class _Cases(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cases: list[Case]


def load_cases(path: str) -> list[Case]:
    """The cases in the file at `path`.

    Raises:
        ConfigError: it cannot be read, is not YAML, or not a cases file.
    """
    try:
        raw = yaml.load(Path(path).read_bytes(), Loader=LOADER)  # noqa: S506 - a safe loader
        return msgspec.convert(raw, _Cases).cases
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: not a cases file: {exc}") from exc


def case_call(case: Case) -> Call[Any]:
    """The call a case makes, as the server would decode it.

    Raises:
        InvalidRequestError: the request is not one the server would accept.
    """
    return _call(case.request, case.headers, case.caller)


def _call(body: Mapping[str, Any], headers: Mapping[str, str], caller: str | None) -> Call[Any]:
    raw = msgspec.json.encode(body)
    lowered = {name.lower(): value for name, value in headers.items()}
    return Call(endpoint=CHAT, body=CHAT.decode(raw), headers=lowered, caller=caller)
