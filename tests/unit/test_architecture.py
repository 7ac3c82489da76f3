"""The dependency direction and module rules of STYLE.md, checked on the source with `ast`.

`routes` and `policies` never import each other and reach into `proxy` only through the leaf modules
(`proxy.answers`, `proxy.errors`, `proxy.jsonbody`, `proxy.parameters`, `proxy.redaction`, `proxy.schemas`,
`proxy.sse`, `proxy.yamlsource`), which import nothing from the project but each other.
No bare `asyncio.create_task`, no module over 400 lines, a docstring on every module.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proxy", "routes", "policies")
LEAVES = frozenset(
    {
        "proxy.answers",
        "proxy.embeddings",
        "proxy.errors",
        "proxy.jsonbody",
        "proxy.parameters",
        "proxy.redaction",
        "proxy.schemas",
        "proxy.sse",
        "proxy.yamlsource",
    }
)
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
        "proxy.errors",
        "proxy.schemas",
        "proxy.sse",
        "proxy.streaming",
        "routes",
        "routes.openai_chat",
        "policies",
    } <= found
    assert found >= LEAVES


def test_import_collection_resolves_absolute_relative_and_from_imports():
    tree = ast.parse(
        "import asyncio\n"
        "from proxy.errors import ProxyError\n"
        "from proxy import sse\n"
        "from . import base\n"
        "from .upstream import Upstream\n"
        "def f():\n"
        "    import policies\n"
    )
    assert imported_modules("routes.openai_chat", tree) == {
        "asyncio",
        "proxy.errors",
        "proxy.sse",
        "routes.base",
        "routes.upstream",
        "policies",
    }
    assert imported_modules("routes", ast.parse("from .base import Route\n")) == {"routes.base"}
    assert imported_modules("routes.base", ast.parse("from proxy import errors, sse\n")) == {
        "proxy.errors",
        "proxy.sse",
    }
    assert imported_modules("proxy.api", ast.parse("from routes import Route, base\n")) == {"routes", "routes.base"}


def test_import_collection_sees_a_real_module_imports():
    assert project_imports(modules()["routes.openai_chat"]) >= {"proxy.answers", "proxy.errors", "proxy.sse"}


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


# --- the rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", names_in("routes"))
def test_routes_never_import_policies(name):
    assert {i for i in project_imports(modules()[name]) if i.split(".")[0] == "policies"} == set()


@pytest.mark.parametrize("name", names_in("policies"))
def test_policies_never_import_routes(name):
    assert {i for i in project_imports(modules()[name]) if i.split(".")[0] == "routes"} == set()


@pytest.mark.parametrize("name", names_in("routes") + names_in("policies"))
def test_routes_and_policies_use_only_the_leaf_proxy_modules(name):
    from_proxy = {i for i in project_imports(modules()[name]) if i.split(".")[0] == "proxy"}
    # `from proxy.errors import X` is recorded as proxy.errors; the bare package `proxy` is not a leaf.
    assert from_proxy - LEAVES == set()


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_leaf_modules_import_only_other_leaves(name):
    assert project_imports(modules()[name]) - LEAVES == set()


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
