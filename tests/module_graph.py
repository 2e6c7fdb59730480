"""The project's modules, found in the tree, and what each imports, read from its source (lazy imports inside
functions included): what the layering, import-cycle and query tests check."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from tests.conftest import REPO_ROOT

LAYERS = ("storage", "jobs", "app")
"""The project's packages, lowest first: each may import only itself and the ones before it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    """Every module of the layers, by dotted name (a package by its own name)."""
    return {module_name(path): path for layer in LAYERS for path in sorted((REPO_ROOT / layer).rglob("*.py"))}


def modules_of(layer: str) -> dict[str, Path]:
    return {name: path for name, path in project_modules().items() if name == layer or name.startswith(layer + ".")}


@cache
def syntax_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _absolute(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The module a `from … import` reads from, relative imports resolved against `module`."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def _names(node: ast.Import | ast.ImportFrom, module: str, path: Path) -> set[str]:
    """What one import statement loads: `from pkg import sub` names the submodule `pkg.sub` when there is one."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    source = _absolute(node, module, path)
    return {f"{source}.{alias.name}" if f"{source}.{alias.name}" in project_modules() else source
            for alias in node.names}


def imported(module: str, path: Path) -> set[str]:
    """Every module name `module` imports, anywhere in its source."""
    return {name for node in ast.walk(syntax_tree(path)) if isinstance(node, ast.Import | ast.ImportFrom)
            for name in _names(node, module, path)}


def _import_time_nodes(body: list[ast.stmt]):
    """The statements that run when the module is imported: not those inside functions."""
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        yield statement
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _import_time_nodes(getattr(statement, field, []))


def imported_at_import_time(module: str, path: Path) -> set[str]:
    """The module names `module` imports as it is imported (module and class level, not inside functions)."""
    return {name for node in _import_time_nodes(syntax_tree(path).body) if isinstance(node, ast.Import | ast.ImportFrom)
            for name in _names(node, module, path)}


def import_graph() -> dict[str, set[str]]:
    """Each project module and the project modules it imports (itself left out)."""
    modules = project_modules()
    return {name: {target for target in imported(name, path) if target in modules and target != name}
            for name, path in modules.items()}
