"""Deer profiles' SQL: the labelled detections they are built from, ``reid_deer_profiles`` (computed by
pgvector in the database), the profile sets, and the mirror onto the deer table's vector columns
(``core/matching.py`` decides with it)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core.store import schema as t

PROFILE_LOCK = 0x5EED_0FF1  # advisory lock: one profile writer at a time

_LABELLED = """
    FROM detections d JOIN reid_embeddings e ON e.detection_id = d.id AND e.version = :version
    WHERE d.deer_id IS NOT NULL AND d.is_reviewed IS TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
"""
_INSERT_PROFILES = sa.text(f"""
    INSERT INTO reid_deer_profiles (version, deer_id, model_family, vector, n_detections)
    SELECT :version, d.deer_id, :family, l2_normalize(avg(e.embedding)), count(*)
    {_LABELLED}
    GROUP BY d.deer_id
    HAVING vector_norm(avg(e.embedding)) > 0
""")
"""Each deer's profile: the L2-normalised mean of its labelled detections' embeddings, computed by
pgvector in the database (``avg`` accumulates in double precision): nothing is loaded into Python,
so a rebuild's memory does not grow with the number of detections. A zero mean gets no profile."""


def _labelled(d: sa.Table) -> sa.ColumnElement[bool]:
    return sa.and_(d.c.deer_id.isnot(None), d.c.is_reviewed.is_(True), d.c.is_valid.isnot(False),
                   d.c.is_duplicate.isnot(True))


def one_writer(conn: sa.Connection) -> None:
    """Take the profile writers' lock until the transaction ends: two rebuilds at once take turns."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PROFILE_LOCK})


def labelled_detection_ids(conn: sa.Connection) -> list[tuple[str, str]]:
    """(detection id, deer id) of every labelled detection: reviewed, with a deer, valid, not a duplicate."""
    d = t.detections
    return [(r[0], r[1]) for r in conn.execute(sa.select(d.c.id, d.c.deer_id).where(_labelled(d)))]


def labelled_counts(conn: sa.Connection) -> tuple[int, int]:
    """(labelled detections, deer they name)."""
    d = t.detections
    return tuple(conn.execute(sa.select(sa.func.count(), sa.func.count(d.c.deer_id.distinct())).where(_labelled(d)))
                 .one())


def embedded_labelled_deer(conn: sa.Connection, version: str) -> int:
    """Deer with at least one labelled detection that has a vector in ``version``."""
    return conn.execute(sa.text(f"SELECT count(DISTINCT d.deer_id) {_LABELLED}"), {"version": version}).scalar_one()


def replace_profiles(conn: sa.Connection, version: str, family: str) -> int:
    """Delete the profiles of ``version`` and compute them again (see ``_INSERT_PROFILES``); returns how many."""
    p = t.reid_deer_profiles
    conn.execute(sa.delete(p).where(p.c.version == version))
    return conn.execute(_INSERT_PROFILES, {"version": version, "family": family}).rowcount


def column_written_before(conn: sa.Connection, column: str) -> bool:
    """Whether a profile set has already written the deer table's ``column``."""
    s = t.reid_profile_sets
    return conn.execute(sa.select(s.c.id).where(s.c.versions.has_key(column)).limit(1)).first() is not None


def deer_column_vectors(conn: sa.Connection, column: str) -> list[sa.Row]:
    """(deer id, vector) of every deer with a vector in the deer table's ``column``."""
    col = getattr(t.deer.c, column)
    return conn.execute(sa.select(t.deer.c.id, col).where(col.isnot(None))).all()


def add_profiles(conn: sa.Connection, version: str, family: str, vectors: list[sa.Row]) -> int:
    """Profiles of ``version`` from (deer id, vector) pairs, with no detections behind them (a profile
    already there is kept); returns how many were added."""
    stmt = pg_insert(t.reid_deer_profiles).values(
        [{"version": version, "deer_id": r[0], "model_family": family, "vector": r[1], "n_detections": 0}
         for r in vectors]
    ).on_conflict_do_nothing()
    return conn.execute(stmt).rowcount


def add_profile_set(conn: sa.Connection, set_id: str, columns: dict[str, str]) -> None:
    """Record the profile set ``set_id`` ({deer-table column: profile version}) unless it is there."""
    conn.execute(pg_insert(t.reid_profile_sets).values(id=set_id, versions=columns).on_conflict_do_nothing())


def mirror_column(conn: sa.Connection, column: str, version: str, set_id: str) -> None:
    """Copy the profiles of ``version`` onto the deer table's ``column`` (and ``embedding_version`` =
    ``set_id``) in one statement: no vector passes through Python. Rows already holding this vector
    and set are left alone: every rewritten row costs an insert into the column's HNSW index, and a
    rebuild after a few new labels changes few deer."""
    conn.execute(sa.text(
        f"UPDATE deer SET {column} = p.vector, embedding_version = :set_id, updated_at = now() "
        "FROM reid_deer_profiles p WHERE p.version = :version AND p.deer_id = deer.id "
        f"AND (deer.{column} IS DISTINCT FROM p.vector OR deer.embedding_version IS DISTINCT FROM :set_id)"),
        {"set_id": set_id, "version": version})
