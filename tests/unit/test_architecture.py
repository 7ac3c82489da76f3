"""The layout's dependency rules (README, "Layout") and STYLE.md's module rules, checked on the source with `ast`.

Each part of the tree may import only the parts `ALLOWED` names for it (a module's own part always);
`FORBIDDEN` adds the rules that hold across parts; and no module imports, at its top level, a module that
imports it back, directly or through others. No bare `asyncio.create_task`, no module over 400 lines, a
docstring on every module.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "routes", "policies")
PARTS = (
    "proxy.wire",
    "proxy.config.sections",
    "proxy.config",
    "proxy.cache",
    "proxy.accounting",
    "proxy.endpoints",
    "proxy.cli",
    "proxy._version",
    "proxy.tasks",
    "proxy.auth",
    "proxy.traffic",
    "proxy.parity",
    "proxy",
    "routes.knowledge",
    "routes.simulator",
    "routes.upstream",
    "routes",
    "policies",
)
"""The parts of the tree, most specific first: a module belongs to the first whose prefix it has."""
_ROW = re.compile(r"^\| `(?P<part>[\w.]+)` \| (?P<allowed>[^|]+) \|$")
_NAME = re.compile(r"`([\w.]+)`")


def layout_rules(readme: str) -> dict[str, frozenset[str]]:
    """The README's Layout table: what each part may import besides itself (named parts include their parts).

    A part whose row says "anything" (`proxy.cli`), and the flat request path, are not in it: they may import
    any part but `proxy.cli`. What a row says in parentheses ("never ...") is said for the reader only.
    """
    section = readme[readme.index("## Layout") :]
    rules = {}
    for line in section.splitlines():
        row = _ROW.match(line.strip())
        if row is None or row["allowed"].startswith("anything"):
            continue
        allowed = re.sub(r"\([^)]*\)", "", row["allowed"])
        rules[row["part"]] = frozenset(_NAME.findall(allowed))
    return rules


ALLOWED = layout_rules((ROOT / "README.md").read_text(encoding="utf-8"))
"""What each part may import besides itself, as the README's Layout section says."""
ROOT_INIT_IMPORTS = frozenset({"proxy._version"})
"""`proxy/__init__.py` imports only the version: importing `proxy.wire` must not pull in the app."""
MAX_LINES = 400


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    source: str
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.name.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Module]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            name = module_name(path)
            found[name] = Module(name, path, source, ast.parse(source, filename=str(path)))
    return found


def is_package(name: str) -> bool:
    return (ROOT / name.replace(".", "/") / "__init__.py").is_file()


def is_module(name: str) -> bool:
    return (ROOT / (name.replace(".", "/") + ".py")).is_file() or is_package(name)


def imported_modules(name: str, tree: ast.AST) -> set[str]:
    """Every module `tree` imports, anywhere in it (functions and TYPE_CHECKING blocks included)."""
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                # A package's own name is its __init__; a module's relative base is its package.
                keep = len(base) - node.level + (1 if is_package(name) else 0)
                prefix = ".".join(base[:keep])
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            # `from proxy import errors` imports the module proxy.errors; `from proxy import X` the package.
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            submodules = {candidate for candidate in submodules if is_module(candidate)}
            imported.update(submodules)
            if len(submodules) < len(node.names):
                imported.add(target)
    return imported


def part_of(name: str) -> str:
    return next(part for part in PARTS if name == part or name.startswith(part + "."))


def top_level_imports(name: str, tree: ast.Module) -> set[str]:
    """The project modules `tree` imports when it is imported (not in functions, not under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= imported_modules(name, node)
    return {i for i in found if i.split(".")[0] in PACKAGES and i != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def project_imports(module: Module) -> set[str]:
    return {
        imported
        for imported in imported_modules(module.name, module.tree)
        if imported.split(".")[0] in PACKAGES and imported != module.name
    }


def create_task_calls(tree: ast.AST) -> list[int]:
    """Lines that call `asyncio.create_task` (by module attribute, alias or `from asyncio import`)."""
    module_aliases = {"asyncio"}
    function_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            module_aliases.update(alias.asname or alias.name for alias in node.names if alias.name == "asyncio")
        elif isinstance(node, ast.ImportFrom) and node.module in ("asyncio", "asyncio.tasks"):
            function_aliases.update(alias.asname or alias.name for alias in node.names if alias.name == "create_task")
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "create_task"
            and isinstance(func.value, ast.Name)
            and func.value.id in module_aliases
        ) or (isinstance(func, ast.Name) and func.id in function_aliases):
            lines.append(node.lineno)
    return lines


def names_in(package: str) -> list[str]:
    return [name for name, module in modules().items() if module.package == package]


# --- the checkers themselves ---------------------------------------------------------------------------


def test_the_scan_finds_the_known_modules():
    found = set(modules())
    assert {
        "proxy",
        "proxy.wire.errors",
        "proxy.wire.schemas",
        "proxy.wire.sse",
        "proxy.streaming",
        "routes",
        "routes.openai_chat",
        "policies",
    } <= found
    assert {part_of(name) for name in found} == set(PARTS)


def test_import_collection_resolves_absolute_relative_and_from_imports():
    tree = ast.parse(
        "import asyncio\n"
        "from proxy.wire.errors import ProxyError\n"
        "from proxy.wire import sse\n"
        "from . import base\n"
        "from .upstream import Upstream\n"
        "def f():\n"
        "    import policies\n"
    )
    assert imported_modules("routes.openai_chat", tree) == {
        "asyncio",
        "proxy.wire.errors",
        "proxy.wire.sse",
        "routes.base",
        "routes.upstream",
        "policies",
    }
    assert imported_modules("routes", ast.parse("from .base import Route\n")) == {"routes.base"}
    assert imported_modules("routes.base", ast.parse("from proxy.wire import errors, sse\n")) == {
        "proxy.wire.errors",
        "proxy.wire.sse",
    }
    assert imported_modules("proxy.api", ast.parse("from routes import Route, base\n")) == {"routes", "routes.base"}


def test_import_collection_sees_a_real_module_imports():
    assert project_imports(modules()["routes.openai_chat"]) >= {
        "proxy.wire.answers",
        "proxy.wire.errors",
        "proxy.wire.sse",
    }


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import asyncio\nasyncio.create_task(f())\n", [2]),
        ("import asyncio as aio\n\naio.create_task(f())\n", [3]),
        ("from asyncio import create_task\ncreate_task(f())\n", [2]),
        ("from asyncio import create_task as spawn\nspawn(f())\n", [2]),
        ("import asyncio\nasyncio.get_running_loop().create_task(f())\ngroup.create_task(f())\n", []),
    ],
)
def test_create_task_detection(source, lines):
    assert create_task_calls(ast.parse(source)) == lines


def test_the_readme_table_is_read_as_the_rules():
    assert layout_rules("## Layout\n| `a.b` | nothing |\n| `c` | `a.b`, `d` (never `e`) |\n| `f` | anything |\n") == {
        "a.b": frozenset(),
        "c": frozenset({"a.b", "d"}),
    }
    assert set(ALLOWED) == set(PARTS) - {"proxy", "proxy.cli"}  # every part has its row


def test_the_rules_catch_a_violation():
    assert part_of("routes.knowledge.index") == "routes.knowledge"
    assert part_of("proxy.config.sections") == "proxy.config.sections"
    assert part_of("proxy.pipeline") == "proxy"
    assert violations("routes.rag", {"proxy.pipeline", "proxy.wire.errors", "policies"}) == {"proxy", "policies"}
    assert violations("proxy.accounting.metrics", {"proxy.cache.lookup"}) == {"proxy.cache"}
    assert violations("proxy.api", {"proxy.cli.main", "routes"}) == {"proxy.cli"}
    assert violations("proxy.cli.policy", {"proxy.pipeline", "proxy.cli.main"}) == set()


def test_cycle_detection_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --- the rules -----------------------------------------------------------------------------------------


def violations(name: str, imported: set[str]) -> set[str]:
    """The parts of `imported` that module `name` may not import."""
    own = part_of(name)
    parts = {part_of(i) for i in imported} - {own}
    if own in ALLOWED:
        allowed = {own, *ALLOWED[own]}  # a part's own parts too (`proxy.config` imports `proxy.config.sections`)
        return {part for part in parts if not any(part == a or part.startswith(a + ".") for a in allowed)}
    entry_point = own == "proxy.cli" or name == "proxy.__main__"  # `python -m proxy` runs the CLI
    return set() if entry_point else parts & {"proxy.cli"}


@pytest.mark.parametrize("name", list(modules()))
def test_each_part_imports_only_what_the_layout_allows(name):
    assert violations(name, project_imports(modules()[name])) == set()


def test_the_proxy_package_imports_only_its_version():
    assert project_imports(modules()["proxy"]) == ROOT_INIT_IMPORTS


def test_no_import_cycles():
    graph = {name: top_level_imports(name, module.tree) for name, module in modules().items()}
    assert cycles(graph) == []


@pytest.mark.parametrize("name", list(modules()))
def test_no_bare_create_task(name):
    assert create_task_calls(modules()[name].tree) == []


@pytest.mark.parametrize("name", list(modules()))
def test_module_is_at_most_400_lines(name):
    assert len(modules()[name].source.splitlines()) <= MAX_LINES


@pytest.mark.parametrize("name", list(modules()))
def test_module_has_a_docstring(name):
    docstring = ast.get_docstring(modules()[name].tree)
    assert docstring is not None
    assert docstring.strip() != ""
