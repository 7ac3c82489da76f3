"""YAML documents that remember where each value stands, so that config errors can name the line.

A leaf module (it imports nothing from the project): the policy file loader and the policies
package both report errors as `file:line`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["YamlDocument", "YamlError", "load_yaml"]

Key = str | int


class YamlError(Exception):
    """The file cannot be read or is not valid YAML; the message names the file (and line)."""


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
        YamlError: the file is missing, unreadable or not valid YAML.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlError(f"{path}: cannot read the file ({exc.strerror})") from exc
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlError(f"{path}:{line}: not valid YAML: {exc.problem}{_hint(text, line)}") from exc
    except yaml.YAMLError as exc:
        raise YamlError(f"{path}: not valid YAML: {exc}") from exc
    lines: dict[tuple[Key, ...], int] = {}
    if node is not None:
        _index(node, (), lines)
    return YamlDocument(path=path, data=data, lines=lines)
