"""YAML documents that remember where each value stands, so that config errors can name the line.

The policy file loader and the policies package both report errors as `file:line`; `YamlDocument.convert`
is the one place a msgspec validation error becomes `file:line: dotted.path: what`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from proxy.config.errors import ConfigError, explain

__all__ = ["Key", "YamlDocument", "load_yaml"]

Key = str | int
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A loaded YAML file: its data and the line (1-based) of every mapping key and sequence item."""

    path: str
    data: Any
    lines: dict[tuple[Key, ...], int]

    def line(self, where: Sequence[Key]) -> int:
        """The line of `where` (a path of keys and indexes), or of its nearest ancestor that has one."""
        path = tuple(where)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return 1

    def locate(self, where: Sequence[Key]) -> str:
        """`file:line` for `where`, for error messages."""
        return f"{self.path}:{self.line(where)}"

    def error(self, where: Sequence[Key], message: str) -> ConfigError:
        """The error for `message` about the value at `where`: `file:line: message`."""
        return ConfigError(f"{self.locate(where)}: {message}")

    def invalid(self, exc: msgspec.ValidationError, where: Sequence[Key] = ()) -> ConfigError:
        """The error for a value at `where` that msgspec refused: `file:line: dotted.path: what`.

        The path is `where` followed by the path inside the value that msgspec names; the line is that
        path's (or its nearest ancestor's). Without any path, the message is `file:line: what`.
        """
        inner, what = explain(exc)
        keys = (*where, *inner)
        dotted = ".".join(str(key) for key in keys)
        return self.error(keys, f"{dotted}: {what}" if dotted else what)

    def convert(self, data: object, kind: type[T], where: Sequence[Key] = ()) -> T:
        """`data` (the value at `where`) as a `kind`.

        Raises:
            ConfigError: `data` is not a valid `kind`, said as `invalid` says it.
        """
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            raise self.invalid(exc, where) from exc


def _index(node: yaml.Node, path: tuple[Key, ...], lines: dict[tuple[Key, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            _index(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*path, index)
            lines[key] = item.start_mark.line + 1
            _index(item, key, lines)


def _hint(text: str, line: int) -> str:
    """A `${VAR}` inside `{...}` is YAML flow syntax, not a value: say how to write it."""
    lines = text.splitlines()
    if 0 < line <= len(lines) and "${" in lines[line - 1]:
        return ' (inside {...}, quote a ${VAR} value: "${VAR}")'
    return ""


def load_yaml(path: str) -> YamlDocument:
    """Read and parse `path` with YAML's safe loader, indexing the line of every key and item.

    Raises:
        ConfigError: the file is missing, unreadable or not valid YAML.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc.strerror})") from exc
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise ConfigError(f"{path}:{line}: not valid YAML: {exc.problem}{_hint(text, line)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    lines: dict[tuple[Key, ...], int] = {}
    if node is not None:
        _index(node, (), lines)
    return YamlDocument(path=path, data=data, lines=lines)
