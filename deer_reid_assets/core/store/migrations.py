"""A small, strict runner for the plain-SQL files in ``migrations/``.

* Files are named ``NNN_description.sql`` and applied in number order, each in its own transaction
  together with its row in ``reid_schema_migrations`` (version, name, sha256 of the file).
* Re-running is a no-op. A database whose recorded migrations disagree with the files (a changed
  file, a file that is gone, or a gap) is refused with an error that names the migration.
* Before anything runs, every file is scanned for statements that would end or escape its
  transaction (``BEGIN``, ``COMMIT``, ``ROLLBACK``, ``CREATE INDEX CONCURRENTLY``, psql commands...);
  such a file is refused (PL/pgSQL bodies, strings and comments are not mistaken for them).
* ``baseline`` records the existing system's levels up to that version without running them, after
  checking each one by shape; ``adopt.py`` (``--adopt``) recognises every level by shape.
* A transaction-scoped advisory lock keeps two migrators from racing.

Alembic would also do; it was not used because the schema is plain SQL shared with the existing
system, and what is needed (order, checksum, baseline) is a few dozen obviously-checkable lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

MIGRATIONS_TABLE = "reid_schema_migrations"
_LOCK_KEY = 0x5EED_DEE2  # advisory lock id of the migrator
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

# The existing system's levels: 001-011 must be there to adopt a database (``--baseline`` up to 011);
# 012, 020 and 021 are its later levels, recognised when present and applied (our equivalent) when not.
BASELINE_LEVELS = [f"{i:03d}" for i in range(1, 12)]
EXISTING_SYSTEM_LEVELS = set(BASELINE_LEVELS) | {"012", "020", "021"}

# Statements that end, open or escape the transaction a migration runs in (or cannot run in one).
_TX_BREAKERS = re.compile(
    r"^(BEGIN|COMMIT|ROLLBACK|END|ABORT|START\s+TRANSACTION|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION|VACUUM"
    r"|CREATE\s+(UNIQUE\s+)?INDEX\s+CONCURRENTLY|DROP\s+INDEX\s+CONCURRENTLY|REINDEX\b.*\bCONCURRENTLY"
    r"|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM|CREATE\s+TABLESPACE|DROP\s+TABLESPACE)\b",
    re.IGNORECASE | re.DOTALL,
)


class MigrationError(RuntimeError):
    """The migrations cannot be applied; the message names the migration and what is wrong."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _code_only(sql: str) -> str:
    """``sql`` with comments, string literals, quoted identifiers and dollar-quoted bodies blanked
    out, so that only the statements' own words remain (a ``BEGIN`` inside ``DO $$ ... $$`` is
    PL/pgSQL, not a transaction command)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        elif ch in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == ch and sql.startswith(ch * 2, j):
                    j += 2
                elif sql[j] == ch:
                    break
                else:
                    j += 1
            i = j + 1
            out.append(" x ")
        elif ch == "$" and (m := re.match(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$", sql[i:])):
            tag = m.group(0)
            j = sql.find(tag, i + len(tag))
            i = n if j < 0 else j + len(tag)
            out.append(" x ")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def transaction_breakers(sql: str) -> list[str]:
    """The statements of ``sql`` that would break the one transaction a migration runs in."""
    found = []
    code = _code_only(sql)
    for line in code.splitlines():
        if line.strip().startswith("\\"):
            found.append(f"psql command {line.strip().split()[0]}")
    for statement in code.split(";"):
        words = " ".join(statement.split())
        if words and _TX_BREAKERS.match(words):
            found.append(" ".join(words.split()[:4]))
    return found


def check_transaction_safe(migration: Migration) -> None:
    bad = transaction_breakers(migration.sql)
    if bad:
        raise MigrationError(
            f"migration {migration.name} contains statements that would break its transaction ({'; '.join(bad)}): "
            "each migration runs in one transaction opened by the runner; remove them"
        )


def default_migrations_dir() -> Path:
    """``migrations/`` at the repository root (the project is installed editable)."""
    candidate = Path(__file__).resolve().parents[3] / "migrations"
    if not candidate.is_dir():
        raise MigrationError(f"no migrations folder at {candidate}: install the project with `pip install -e .`")
    return candidate


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or default_migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files must be named NNN_description.sql")
        found.append(Migration(match.group(1), path.stem, path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {directory}")
    expected = [f"{i:03d}" for i in range(1, len(found) + 1)]
    if versions != expected:
        raise MigrationError(f"migration numbers in {directory} must run 001..{len(found):03d} without gaps: {versions}")
    for m in found:
        check_transaction_safe(m)
    return found


def _ensure_table(conn: sa.Connection) -> None:
    conn.execute(
        sa.text(
            f"""CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
                version    VARCHAR(3) PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   CHAR(64) NOT NULL,
                baseline   BOOLEAN NOT NULL DEFAULT FALSE,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )
    )


def applied(conn: sa.Connection) -> dict[str, tuple[str, str, bool]]:
    """version -> (name, checksum, baseline) of what the database has recorded."""
    exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": MIGRATIONS_TABLE}).scalar()
    if exists is None:
        return {}
    rows = conn.execute(sa.text(f"SELECT version, name, checksum, baseline FROM {MIGRATIONS_TABLE}"))
    return {r.version: (r.name, r.checksum, r.baseline) for r in rows}


def verify(recorded: dict[str, tuple[str, str, bool]], migrations: list[Migration]) -> None:
    """Refuse a database whose history disagrees with the files."""
    by_version = {m.version: m for m in migrations}
    for version, (name, checksum, baseline) in sorted(recorded.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"the database records migration {version} ({name}) but there is no such file")
        if migration.name != name:
            raise MigrationError(f"migration {version} is recorded as {name!r} but the file is {migration.name!r}")
        if not baseline and migration.checksum != checksum:
            raise MigrationError(
                f"migration {version} ({name}) was changed after it was applied (checksum differs); "
                "write a new migration instead of editing an applied one"
            )
    gaps = [m.version for m in migrations if m.version not in recorded and any(v > m.version for v in recorded)]
    if gaps:
        raise MigrationError(f"the database skips migration(s) {', '.join(gaps)} that come before applied ones")


def record(engine: sa.Engine, m: Migration) -> bool:
    """Record ``m`` as already there (adopted, not run), in its own transaction; False when another
    migrator recorded it first."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        if m.version in applied(conn):
            return False
        conn.execute(
            sa.text(f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, baseline) VALUES (:v, :n, :c, TRUE)"),
            {"v": m.version, "n": m.name, "c": m.checksum},
        )
    return True


def apply_one(engine: sa.Engine, m: Migration) -> bool:
    """Run ``m`` and record it, in one transaction; False when another migrator applied it first."""
    check_transaction_safe(m)
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        if m.version in applied(conn):
            return False
        try:
            conn.exec_driver_sql(m.sql)
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise MigrationError(f"migration {m.name} failed and was rolled back: {reason}") from exc
        conn.execute(
            sa.text(f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES (:v, :n, :c)"),
            {"v": m.version, "n": m.name, "c": m.checksum},
        )
    return True


def prepare(engine: sa.Engine, migrations: list[Migration]) -> dict[str, tuple[str, str, bool]]:
    """Create the history table if needed and check the recorded history against the files."""
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        _ensure_table(conn)
        recorded = applied(conn)
    verify(recorded, migrations)
    return recorded


def migrate(engine: sa.Engine, *, baseline: str | None = None, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date).

    ``baseline``: the database already has the existing system's levels up to that one; each is
    verified by shape (``core/store/adopt.py``) before it is recorded, and refused otherwise."""
    migrations = discover(directory)
    if baseline is not None:
        baseline = f"{int(baseline):03d}" if baseline.isdigit() else baseline
        if baseline not in BASELINE_LEVELS:
            raise MigrationError(f"--baseline must be one of the existing system's levels 001-011, got {baseline!r}")
        from deer_reid_assets.core.store import adopt

        adopt.record_baseline(engine, migrations, baseline)
    recorded = prepare(engine, migrations)
    done: list[str] = []
    for m in migrations:
        if m.version not in recorded and apply_one(engine, m):
            done.append(m.name)
            if baseline is not None and m.name == "022_create_coexistence_tables":
                from deer_reid_assets.core import coexistence  # the existing system keeps live matching

                with engine.begin() as conn:
                    coexistence.hand_to_existing_system(conn)
    return done


def status(engine: sa.Engine, directory: Path | None = None) -> list[tuple[str, str]]:
    """(name, state) for every migration file: 'applied', 'baseline' or 'pending'."""
    migrations = discover(directory)
    with engine.connect() as conn:
        recorded = applied(conn)
    verify(recorded, migrations)
    out = []
    for m in migrations:
        if m.version not in recorded:
            out.append((m.name, "pending"))
        else:
            out.append((m.name, "baseline" if recorded[m.version][2] else "applied"))
    return out
