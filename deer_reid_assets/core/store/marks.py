"""SQL of the marks people record per deer (``reid_deer_marks``, migration 026), the boxes the body
size is measured from, and the ``marks`` / ``body_size`` keys of ``deer.physical_features``.
Callers own the transaction."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

OWN_KEYS = ("marks", "body_size")  # the physical_features keys written from here (antlers: antler_annotations.py)

_ROW = """id, deer_id::text AS deer_id, reviewer, created_at, source, before, after, undone_at"""


def insert_record(conn: sa.Connection, *, deer_id: str, reviewer: str, source: str, before: dict | None,
                  after: dict) -> int:
    return int(conn.execute(sa.text(
        """INSERT INTO reid_deer_marks (deer_id, reviewer, source, before, after)
           VALUES (CAST(:d AS uuid), :r, :s, CAST(:b AS jsonb), CAST(:a AS jsonb)) RETURNING id"""),
        {"d": deer_id, "r": reviewer, "s": source, "b": json.dumps(before) if before is not None else None,
         "a": json.dumps(after)}).scalar_one())


def current(conn: sa.Connection, deer_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """deer id -> its newest record not undone (of ``deer_ids``, or of every deer)."""
    rows = conn.execute(sa.text(
        f"""SELECT DISTINCT ON (deer_id) {_ROW} FROM reid_deer_marks
            WHERE undone_at IS NULL AND (CAST(:ids AS text[]) IS NULL OR deer_id::text = ANY(CAST(:ids AS text[])))
            ORDER BY deer_id, id DESC"""), {"ids": list(deer_ids) if deer_ids is not None else None}).mappings()
    return {r["deer_id"]: dict(r) for r in rows}


def history(conn: sa.Connection, deer_id: str, limit: int = 10) -> list[dict[str, Any]]:
    """A deer's records, newest first (undone ones included)."""
    rows = conn.execute(sa.text(
        f"SELECT {_ROW} FROM reid_deer_marks WHERE deer_id::text = :d ORDER BY id DESC LIMIT :n"),
        {"d": deer_id, "n": limit}).mappings()
    return [dict(r) for r in rows]


def last_by_reviewer(conn: sa.Connection, reviewer: str) -> dict[str, Any] | None:
    """The reviewer's newest record not undone, row-locked; None when there is none."""
    row = conn.execute(sa.text(
        f"""SELECT {_ROW} FROM reid_deer_marks WHERE reviewer = :r AND undone_at IS NULL
            ORDER BY id DESC LIMIT 1 FOR UPDATE"""), {"r": reviewer}).mappings().first()
    return dict(row) if row else None


def mark_undone(conn: sa.Connection, record_id: int) -> None:
    conn.execute(sa.text("UPDATE reid_deer_marks SET undone_at = now() WHERE id = :i"), {"i": record_id})


def lock_deer(conn: sa.Connection, deer_id: str) -> dict[str, Any] | None:
    """id, name and sex of a deer, row-locked (so two saves of one deer queue up); None: no such deer."""
    row = conn.execute(sa.text(
        "SELECT id::text AS deer_id, name, sex::text AS sex FROM deer WHERE id::text = :d FOR UPDATE"),
        {"d": deer_id}).mappings().first()
    return dict(row) if row else None


def deer_ids_named(conn: sa.Connection, name: str) -> list[str]:
    return list(conn.execute(sa.text("SELECT id::text FROM deer WHERE name = :n ORDER BY id"), {"n": name}).scalars())


def deer_sexes(conn: sa.Connection) -> dict[str, str]:
    return dict(conn.execute(sa.text("SELECT id::text, sex::text FROM deer")).all())


def size_boxes(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every valid, non-duplicate detection with a box: id, camera (location id), box bottom and
    height in pixels, class (a person's correction wins), deer, reviewed."""
    rows = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, i.location_id::text AS camera,
                  (d.bbox->>'y')::float8 + (d.bbox->>'height')::float8 AS bottom, (d.bbox->>'height')::float8 AS height,
                  COALESCE(d.corrected_classification, d.classification, 'unknown') AS classification,
                  d.deer_id::text AS deer_id, d.is_reviewed AS reviewed
           FROM detections d JOIN images i ON i.id = d.image_id
           WHERE d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
             AND json_typeof(d.bbox->'y') = 'number' AND json_typeof(d.bbox->'height') = 'number'
           ORDER BY d.id""")).mappings()
    return [dict(r) for r in rows]


def stored_features(conn: sa.Connection, deer_ids: list[str]) -> dict[str, dict]:
    """deer id -> its ``physical_features`` ({} when NULL)."""
    rows = conn.execute(sa.text(
        "SELECT id::text, COALESCE(physical_features, '{}'::jsonb) FROM deer WHERE id::text = ANY(:ids)"),
        {"ids": list(deer_ids)})
    return {d: (pf if isinstance(pf, dict) else json.loads(pf)) for d, pf in rows}


def write_features(conn: sa.Connection, patches: dict[str, dict]) -> int:
    """Replace the ``marks`` and ``body_size`` keys of each deer's ``physical_features`` with the
    patch's (a key absent from the patch is removed); every other key (``antlers``) is kept."""
    if not patches:
        return 0
    conn.execute(sa.text(
        """UPDATE deer SET physical_features = (COALESCE(physical_features, '{}'::jsonb) - 'marks' - 'body_size')
                                              || CAST(:p AS jsonb)
           WHERE id = CAST(:d AS uuid)"""),
        [{"d": deer_id, "p": json.dumps({k: v for k, v in patch.items() if k in OWN_KEYS})}
         for deer_id, patch in sorted(patches.items())])
    return len(patches)
