"""A small, strict runner for the plain-SQL files in ``migrations/``.

* Files are named ``NNN_description.sql`` and applied in number order, each in its own transaction
  together with its row in ``reid_schema_migrations`` (version, name, sha256 of the file).
* Re-running is a no-op. A database whose recorded migrations disagree with the files (a changed
  file, a file that is gone, or a gap) is refused with an error that names the migration.
* ``baseline`` adopts the user's existing database: migrations up to and including that version are
  recorded as applied, without running them, after checking that the tables they create exist.
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

# What each baseline migration of the existing system must have left behind, checked before
# ``--baseline`` records it as applied: (table, column) pairs, column None = the table itself.
BASELINE_OBJECTS: dict[str, list[tuple[str, str | None]]] = {
    "001": [],
    "002": [],
    "003": [("locations", None)],
    "004": [("images", None), ("images", "processing_status")],
    "005": [("deer", None)],
    "006": [("detections", None), ("detections", "bbox")],
    "007": [("detections", "is_reviewed")],
    "008": [("detections", "burst_group_id")],
    "009": [("deer", "feature_vector")],
    "010": [("deer", "sighting_count")],
    "011": [("reid_similarity_scores", None)],
}


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


def _check_baseline_objects(conn: sa.Connection, upto: str) -> None:
    missing = []
    for version, objects in sorted(BASELINE_OBJECTS.items()):
        if version > upto:
            continue
        for table, column in objects:
            if column is None:
                ok = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None
            else:
                ok = conn.execute(
                    sa.text(
                        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND table_name = :t AND column_name = :c"
                    ),
                    {"t": table, "c": column},
                ).first() is not None
            if not ok:
                missing.append(f"{version}: {table}" + (f".{column}" if column else ""))
    if missing:
        raise MigrationError(
            f"cannot record the baseline up to {upto}: the database lacks what those migrations create ({'; '.join(missing)})"
        )


def migrate(engine: sa.Engine, *, baseline: str | None = None, directory: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    migrations = discover(directory)
    if baseline is not None:
        baseline = f"{int(baseline):03d}" if baseline.isdigit() else baseline
        if baseline not in BASELINE_OBJECTS:
            raise MigrationError(f"--baseline must be one of the existing system's migrations 001-011, got {baseline!r}")
    done: list[str] = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        _ensure_table(conn)
        recorded = applied(conn)
        verify(recorded, migrations)
        if baseline is not None:
            _check_baseline_objects(conn, baseline)
            for m in migrations:
                if m.version <= baseline and m.version not in recorded:
                    conn.execute(
                        sa.text(
                            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, baseline) VALUES (:v, :n, :c, TRUE)"
                        ),
                        {"v": m.version, "n": m.name, "c": m.checksum},
                    )
                    recorded[m.version] = (m.name, m.checksum, True)
    for m in migrations:
        if m.version in recorded:
            continue
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            if m.version in applied(conn):  # another migrator got there first
                continue
            try:
                conn.exec_driver_sql(m.sql)
            except sa.exc.DBAPIError as exc:
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise MigrationError(f"migration {m.name} failed and was rolled back: {reason}") from exc
            conn.execute(
                sa.text(f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES (:v, :n, :c)"),
                {"v": m.version, "n": m.name, "c": m.checksum},
            )
        done.append(m.name)
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
