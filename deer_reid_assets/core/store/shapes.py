"""What each migration leaves in a database (its *shape*), and whether a live database has it.

A migration's shape is not written down by hand: each file is run, in order, inside a scratch schema
of the database being inspected, in a transaction that is always rolled back, and the catalog is
read before and after it. What a file adds or changes (types, tables, columns with type, nullability
and default, constraints, indexes) is its shape, so the shapes can never drift from the files.

A live database is then compared object by object: a level is *present* when everything it makes is
there with the same definition, *absent* when none of it is, and anything in between is reported
with what differs. An index counts when an index of the same definition exists under another name
(the existing system's tables were made partly by SQLAlchemy, partly by hand-run SQL, and names
differ between the two routes); column defaults that differ are reported but do not refuse (this
project always writes every value itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sqlalchemy as sa

PROBE_SCHEMA = "reid_shape_probe"

Key = tuple  # ("table", t) | ("column", t, c) | ("constraint", t, name) | ("index", t, name) | ("type", name)


def catalog(conn: sa.Connection, schema: str) -> dict[Key, object]:
    """Every object of ``schema`` that migrations make, keyed for comparison."""
    out: dict[Key, object] = {}
    p = {"s": schema}
    for name, labels in conn.execute(sa.text(
            "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid "
            "WHERE n.nspname = :s GROUP BY t.typname"), p):
        out[("type", name)] = tuple(labels)
    for (table,) in conn.execute(sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind IN ('r', 'p')"), p):
        out[("table", table)] = True
    for table, column, typ, notnull, default in conn.execute(sa.text(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE n.nspname = :s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"), p):
        out[("column", table, column)] = (_unqualify(typ, schema), notnull, _unqualify(default, schema))
    for table, name, definition in conn.execute(sa.text(
            "SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND k.contype <> 'n'"), p):  # NOT NULL is compared on the column
        out[("constraint", table, name)] = _unqualify(definition, schema)
    for table, name, definition, is_constraint in conn.execute(sa.text(
            "SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid), "
            "EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid) "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = :s"), p):
        if not is_constraint:  # primary keys / unique constraints are compared as constraints
            out[("index", table, name)] = _index_body(definition)
    return out


def _unqualify(text: str | None, schema: str) -> str | None:
    if text is None:
        return None
    return text.replace(f"{schema}.", "").replace(f'"{schema}".', "")


def _index_body(definition: str) -> str:
    """``CREATE [UNIQUE] INDEX name ON schema.table USING ...`` without the name and the schema."""
    body = re.sub(r"^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+?\.", r"CREATE \1INDEX ON ", definition)
    return body


def describe(key: Key) -> str:
    kind = key[0]
    if kind in ("table", "type"):
        return f"{kind} {key[1]}"
    if kind == "column":
        return f"column {key[1]}.{key[2]}"
    return f"{kind} {key[2]} on {key[1]}"


@dataclass
class LevelCheck:
    """How a live database compares with one migration's shape."""

    version: str
    name: str
    n_objects: int
    exact: int = 0  # objects found exactly as the migration makes them (name included)
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if not self.missing and not self.different:
            return "present"
        if self.exact == 0 and not self.different:
            return "absent"
        return "differs"

    def explain(self, limit: int = 8) -> str:
        parts = [f"missing {m}" for m in self.missing] + self.different
        more = f" (and {len(parts) - limit} more)" if len(parts) > limit else ""
        return "; ".join(parts[:limit]) + more


def probe_shapes(conn: sa.Connection, migrations: list) -> dict[str, dict[Key, object]]:
    """version -> the objects that migration adds or changes, found by running every file in a
    scratch schema. The caller's transaction is rolled back to a savepoint afterwards, so nothing
    stays behind."""
    shapes: dict[str, dict[Key, object]] = {}
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(f"CREATE SCHEMA {PROBE_SCHEMA}")
        live_path = conn.exec_driver_sql("SHOW search_path").scalar()
        conn.exec_driver_sql(f"SET LOCAL search_path TO {PROBE_SCHEMA}, {live_path}")
        before = catalog(conn, PROBE_SCHEMA)
        for m in migrations:
            conn.exec_driver_sql(m.sql)
            after = catalog(conn, PROBE_SCHEMA)
            shapes[m.version] = {k: v for k, v in after.items() if before.get(k) != v}
            before = after
    finally:
        savepoint.rollback()  # also undoes SET LOCAL
    return shapes


def compare(live: dict[Key, object], shape: dict[Key, object], version: str, name: str) -> LevelCheck:
    check = LevelCheck(version, name, len(shape))
    index_bodies: dict[str, set[str]] = {}
    for key, body in live.items():
        if key[0] == "index":
            index_bodies.setdefault(key[1], set()).add(body)
    missing_tables = {k[1] for k in shape if k[0] == "table" and k not in live}
    order = {"type": 0, "table": 1, "column": 2, "constraint": 3, "index": 4}
    for key, expected in sorted(shape.items(), key=lambda kv: (order[kv[0][0]], [str(p) for p in kv[0]])):
        got = live.get(key)
        if key[0] != "table" and key[0] != "type" and key[1] in missing_tables:
            check.n_objects -= 1  # reported once, as the missing table
            continue
        if got == expected:
            check.exact += 1
        if key[0] == "index":
            if got == expected:
                continue
            if expected in index_bodies.get(key[1], set()):
                check.notes.append(f"{describe(key)} exists under another name")
                continue
            if got is None:
                check.missing.append(describe(key))
            else:
                check.different.append(f"{describe(key)} is `{got}`, expected `{expected}`")
            continue
        if got is None:
            check.missing.append(describe(key))
        elif key[0] == "column":
            (etype, enull, edefault), (gtype, gnull, gdefault) = expected, got
            if etype != gtype:
                check.different.append(f"{describe(key)} is {gtype}, expected {etype}")
            if enull != gnull:
                check.different.append(f"{describe(key)} is {'NOT NULL' if gnull else 'nullable'}, "
                                       f"expected {'NOT NULL' if enull else 'nullable'}")
            if edefault != gdefault:
                check.notes.append(f"{describe(key)} default is {gdefault or 'none'}, expected {edefault or 'none'}")
        elif got != expected:
            check.different.append(f"{describe(key)} is `{got}`, expected `{expected}`")
    return check
