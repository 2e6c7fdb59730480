"""jobs/ and app/ ask storage's repository functions for rows and never build SQLAlchemy queries themselves
(design.md section 4): a query written beside its caller skips the repositories' person scoping (storage/access.py)
and is the one nobody finds when the tables change."""

from __future__ import annotations

import ast
import inspect

from sqlalchemy.orm import DeclarativeBase

import storage.models
from tests.module_graph import modules_of, syntax_tree

SESSION_TYPE = "sqlalchemy.orm.Session"
"""The one SQLAlchemy name callers may import: a type hint on a function handed the caller's session."""
QUERY_METHODS = {"query", "execute", "scalars", "scalar"}
"""Methods that run a query, whatever object they are called on (no other library here has them)."""
SESSION_METHODS = QUERY_METHODS | {"get", "add", "add_all", "delete", "merge", "flush", "refresh", "expunge"}
"""What a repository function does with the session; a caller only opens and closes the transaction."""
EXEMPT: set[str] = set()
"""Reviewed exceptions, as "module: line text". None today."""

TABLES = {name for name, value in vars(storage.models).items()
          if inspect.isclass(value) and issubclass(value, DeclarativeBase) and value.__module__ == "storage.models"}


def _tables_named(tree: ast.Module) -> set[str]:
    """The local names a module gives the mapped classes it imports from storage.models."""
    return {alias.asname or alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "storage.models"
            for alias in node.names if alias.name in TABLES}


def _problem(node: ast.AST, tables: set[str]) -> str | None:
    if isinstance(node, ast.Import | ast.ImportFrom):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [f"{node.module}.{alias.name}" for alias in node.names])
        sqlalchemy = [name for name in names if name.split(".")[0] == "sqlalchemy" and name != SESSION_TYPE]
        return f"imports {', '.join(sqlalchemy)}" if sqlalchemy else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method, owner = node.func.attr, node.func.value
        if method in QUERY_METHODS or (method in SESSION_METHODS and isinstance(owner, ast.Name)
                                       and owner.id == "session"):
            return f"calls {ast.unparse(node.func)}()"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in tables:
        return f"uses the column {ast.unparse(node)}"  # a class attribute of a table is a query expression
    return None


def query_building() -> list[str]:
    found = []
    for layer in ("jobs", "app"):
        for module, path in modules_of(layer).items():
            tree = syntax_tree(path)
            tables = _tables_named(tree)
            lines = path.read_text().splitlines()
            for node in ast.walk(tree):
                if (problem := _problem(node, tables)) and f"{module}: {lines[node.lineno - 1].strip()}" not in EXEMPT:
                    found.append(f"{module}:{node.lineno} {problem}")
    return sorted(set(found))


def test_the_check_sees_queries_columns_and_session_work():
    source = ("from sqlalchemy import select\nfrom storage.models import Job as J\n"
              "def f(session):\n    session.get(J, 1)\n    return J.status == 'queued'\n")
    tables = _tables_named(ast.parse(source))
    found = {_problem(node, tables) for node in ast.walk(ast.parse(source))} - {None}
    assert found == {"imports sqlalchemy.select", "calls session.get()", "uses the column J.status"}
    harmless = "from sqlalchemy.orm import Session\ndef f(job):\n    return job.status, {}.get('a')\n"
    assert {_problem(node, set()) for node in ast.walk(ast.parse(harmless))} == {None}


def test_jobs_and_app_build_no_queries():
    found = query_building()
    assert not found, "move these into a repository function in storage/ (session first, never commits):\n" + (
        "\n".join(found))
