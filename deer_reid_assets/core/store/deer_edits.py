"""SQL of merging and splitting deer in the review app: a deer's detections, its name and notes, the
rows of one merge/split operation, and the marker a sensor watches. Callers own the transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def deer_row(conn: sa.Connection, deer_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    """id, name, sex and notes of a deer (row-locked with ``lock``); None when there is none."""
    row = conn.execute(sa.text(
        "SELECT id::text AS deer_id, name, sex::text AS sex, notes FROM deer WHERE id::text = :d"
        + (" FOR UPDATE" if lock else "")), {"d": deer_id}).mappings().first()
    return dict(row) if row else None


def set_deer_notes(conn: sa.Connection, deer_id: str, notes: str | None) -> None:
    conn.execute(sa.text("UPDATE deer SET notes = :n, updated_at = now() WHERE id = CAST(:d AS uuid)"),
                 {"d": deer_id, "n": notes})


def detections_of(conn: sa.Connection, deer_id: str) -> list[str]:
    """Every detection pointing at a deer, row-locked (oldest id first)."""
    return list(conn.execute(sa.text(
        "SELECT id::text FROM detections WHERE deer_id = CAST(:d AS uuid) ORDER BY id FOR UPDATE"),
        {"d": deer_id}).scalars())


def operation_rows(conn: sa.Connection, operation_id: str) -> list[dict[str, Any]]:
    """The corrections of one merge or split not yet undone, row-locked, newest first."""
    rows = conn.execute(sa.text(
        """SELECT id, detection_id::text AS detection_id, action, queue_reason, before, after
           FROM reid_review_corrections
           WHERE operation_id = CAST(:o AS uuid) AND undone_at IS NULL ORDER BY id DESC FOR UPDATE"""),
        {"o": operation_id}).mappings().all()
    return [dict(r) for r in rows]


def edits_marker(conn: sa.Connection) -> str:
    """Changes whenever a merge or split is recorded or undone: '<newest id>|<newest undo time>'."""
    newest, undone = conn.execute(sa.text(
        """SELECT max(id), max(undone_at) FROM reid_review_corrections WHERE operation_id IS NOT NULL""")).one()
    return f"{newest or 0}|{undone.isoformat() if undone else ''}"

