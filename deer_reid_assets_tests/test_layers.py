"""The store layer is the one place that knows SQL: outside ``core/store/`` the package may name
SQLAlchemy's engine, connection and row types (and catch its errors), but builds no statement and
executes none."""

from __future__ import annotations

import ast
from pathlib import Path

import deer_reid_assets

PACKAGE = Path(deer_reid_assets.__file__).parent
STORE = PACKAGE / "core" / "store"
ALLOWED = {"Engine", "Connection", "Row", "exc"}  # types in signatures, errors caught
EXECUTING = {"execute", "exec_driver_sql", "scalar", "scalars"}


def sql_outside_the_store(path: Path) -> list[str]:
    """What in ``path`` builds or runs SQL: ``sa.select(...)``, ``from sqlalchemy import text``,
    ``conn.execute(...)``; one line each, with its line number."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for a in node.names if a.name == "sqlalchemy"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            names = [a.name for a in node.names if node.module != "sqlalchemy" or a.name not in ALLOWED]
            if names:
                found.append(f"{node.lineno}: from {node.module} import {', '.join(names)}")
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
              and node.attr not in ALLOWED):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in EXECUTING and isinstance(node.func.value, ast.Name)
              and node.func.value.id in {"conn", "connection", "engine", "session"}):
            found.append(f"{node.lineno}: {node.func.value.id}.{node.func.attr}(...)")
    return found


def test_no_sql_outside_the_store_layer() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if STORE not in p.parents]
    assert len(modules) > 50  # the whole package was read
    offenders = {str(p.relative_to(PACKAGE)): hits for p in modules if (hits := sql_outside_the_store(p))}
    assert offenders == {}


def test_the_check_finds_sql(tmp_path: Path) -> None:
    module = tmp_path / "leaky.py"
    module.write_text(
        "import sqlalchemy as sa\n"
        "from sqlalchemy import text\n"
        "def f(conn: sa.Connection, engine: sa.Engine) -> None:\n"
        "    conn.execute(sa.select(1))\n"
        "    try:\n"
        "        pass\n"
        "    except sa.exc.DBAPIError:\n"
        "        pass\n")
    assert sorted(sql_outside_the_store(module)) == ["2: from sqlalchemy import text", "4: conn.execute(...)", "4: sa.select"]
