"""The SQL of living beside the existing system's worker (``core/coexistence.py`` decides with it): who
owns live matching (``reid_live_matching``), the matcher's proposals, and what a cut-over keeps and an
undo puts back (``reid_cutovers``, ``reid_cutover_kept_deer``, ``reid_cutover_kept_assignments``).
Callers own the transaction."""

from __future__ import annotations

import json

import sqlalchemy as sa


def adopted(conn: sa.Connection) -> bool:
    """Whether this database is the existing system's (adopted with ``db migrate --adopt``/``--baseline``),
    as opposed to a stand-alone install where every assignment is this pipeline's."""
    if conn.execute(sa.text("SELECT to_regclass('reid_schema_migrations')")).scalar() is None:
        return False
    return conn.execute(sa.text("SELECT count(*) FROM reid_schema_migrations WHERE baseline AND version = '001'")
                        ).scalar() > 0


def live_matching_row(conn: sa.Connection) -> sa.Row | None:
    """``(owner, reassign)`` of live matching; None without the table or its row."""
    if conn.execute(sa.text("SELECT to_regclass('reid_live_matching')")).scalar() is None:
        return None
    return conn.execute(sa.text("SELECT owner, reassign FROM reid_live_matching")).first()


def lock_live_matching(conn: sa.Connection) -> None:
    """Row-lock ``reid_live_matching`` until the transaction ends (one cut-over or undo at a time)."""
    conn.execute(sa.text("SELECT * FROM reid_live_matching FOR UPDATE"))


def set_owner(conn: sa.Connection, owner: str, reassign: bool) -> None:
    conn.execute(sa.text("UPDATE reid_live_matching SET owner = :o, reassign = :r, changed_at = now()"),
                 {"o": owner, "r": reassign})


def worker_assigned(conn: sa.Connection) -> set[str]:
    """Unreviewed detections with a deer that no matching run of this pipeline wrote (a run that only
    proposed wrote nothing)."""
    rows = conn.execute(sa.text(
        """SELECT d.id::text FROM detections d
           WHERE d.is_reviewed IS NOT TRUE AND d.deer_id IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM reid_assignment_log l JOIN reid_assignment_runs r ON r.run_id = l.run_id
               WHERE l.detection_id = d.id AND l.new_deer_id = d.deer_id
                 AND NOT EXISTS (SELECT 1 FROM reid_match_proposals p
                                 WHERE p.run_id = l.run_id AND p.detection_id = l.detection_id))"""))
    return set(rows.scalars())


def proposed_only(conn: sa.Connection, run_id: str) -> bool:
    """Whether matching run ``run_id`` only proposed (made while the existing system owned live matching)."""
    return conn.execute(sa.text("SELECT 1 FROM reid_match_proposals WHERE run_id = :r LIMIT 1"), {"r": run_id}).first() \
        is not None


def record_proposals(conn: sa.Connection, run_id: str, log: list[dict],
                     candidates: dict[str, list[dict]] | None = None) -> None:
    """The run's proposals; ``candidates``: per detection its top candidates ``[{deer_id, similarity}]``,
    best first (what the review queue shows before cut-over)."""
    if log:  # one statement, one array per column (not a round trip per proposal)
        conn.execute(sa.text(
            "INSERT INTO reid_match_proposals (run_id, detection_id, current_deer_id, proposed_deer_id, similarity, "
            "candidates) SELECT :run_id, x.* FROM unnest(CAST(:dets AS uuid[]), CAST(:current AS uuid[]), "
            "CAST(:proposed AS uuid[]), CAST(:similarity AS double precision[]), CAST(:candidates AS jsonb[])) AS x"),
            {"run_id": run_id, "dets": [str(r["detection_id"]) for r in log],
             "current": [_text_or_none(r["previous_deer_id"]) for r in log],
             "proposed": [_text_or_none(r["new_deer_id"]) for r in log],
             "similarity": [r["similarity"] for r in log],
             "candidates": [json.dumps((candidates or {}).get(r["detection_id"], [])) for r in log]})


def _text_or_none(value) -> str | None:
    return None if value is None else str(value)


def latest_proposals(conn: sa.Connection) -> list[tuple[str, str | None]]:
    """(detection id, proposed deer id) of each unreviewed detection's newest proposal."""
    return [tuple(r) for r in conn.execute(sa.text(
        """SELECT DISTINCT ON (p.detection_id) p.detection_id::text, p.proposed_deer_id::text
           FROM reid_match_proposals p JOIN reid_assignment_runs r ON r.run_id = p.run_id
           JOIN detections d ON d.id = p.detection_id
           WHERE d.is_reviewed IS NOT TRUE ORDER BY p.detection_id, r.created_at DESC""")).all()]


def assignments(conn: sa.Connection) -> dict[str, str | None]:
    """Every detection's deer: detection id -> deer id (or None)."""
    return dict(conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections")).all())


def profiles_of(conn: sa.Connection, versions: list[str]) -> int:
    """How many profiles the embedding ``versions`` have."""
    return conn.execute(sa.text("SELECT count(*) FROM reid_deer_profiles WHERE version = ANY(:v)"),
                        {"v": versions}).scalar()


# --- cut-over and undo ---------------------------------------------------------------------------
def insert_cutover(conn: sa.Connection, reassign: bool) -> int:
    """A new cut-over; returns its id."""
    return conn.execute(sa.text("INSERT INTO reid_cutovers (reassign) VALUES (:r) RETURNING id"), {"r": reassign}).scalar()


def keep_deer(conn: sa.Connection, cutover_id: int) -> int:
    """Keep every deer's vectors and embedding version for the cut-over; returns how many deer."""
    return conn.execute(sa.text(
        """INSERT INTO reid_cutover_kept_deer SELECT :c, id, feature_vector, feature_vector_multiscale,
                  feature_vector_efficientnet, embedding_version FROM deer"""), {"c": cutover_id}).rowcount


def keep_assignments(conn: sa.Connection, cutover_id: int) -> None:
    """Keep every detection's deer for the cut-over."""
    conn.execute(sa.text("INSERT INTO reid_cutover_kept_assignments SELECT :c, id, deer_id FROM detections"),
                 {"c": cutover_id})


def open_cutover(conn: sa.Connection) -> int | None:
    """Id of the newest cut-over not undone, or None."""
    return conn.execute(sa.text(
        "SELECT id FROM reid_cutovers WHERE undone_at IS NULL ORDER BY id DESC LIMIT 1")).scalar()


def restore_deer(conn: sa.Connection, cutover_id: int) -> None:
    """Put back the deer vectors and embedding versions the cut-over kept."""
    conn.execute(sa.text(
        """UPDATE deer SET feature_vector = k.feature_vector, feature_vector_multiscale = k.feature_vector_multiscale,
                  feature_vector_efficientnet = k.feature_vector_efficientnet, embedding_version = k.embedding_version
           FROM reid_cutover_kept_deer k WHERE k.cutover_id = :c AND k.deer_id = deer.id"""), {"c": cutover_id})


def restore_assignments(conn: sa.Connection, cutover_id: int) -> int:
    """Put back the kept deer of the detections nobody reviewed since; returns how many changed."""
    return conn.execute(sa.text(
        """UPDATE detections SET deer_id = k.deer_id FROM reid_cutover_kept_assignments k
           WHERE k.cutover_id = :c AND k.detection_id = detections.id AND detections.is_reviewed IS NOT TRUE
             AND detections.deer_id IS DISTINCT FROM k.deer_id"""), {"c": cutover_id}).rowcount


def mark_undone(conn: sa.Connection, cutover_id: int) -> None:
    conn.execute(sa.text("UPDATE reid_cutovers SET undone_at = now() WHERE id = :c"), {"c": cutover_id})
