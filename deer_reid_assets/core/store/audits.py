"""The audit's SQL (``core/audit.py`` decides with it): vector norms, the detections a matcher would see,
and the crops and names of the sample of changed assignments."""

from __future__ import annotations

import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t


def version_family_status(conn: sa.Connection, version: str) -> sa.Row | None:
    """``(model_family, status)`` of an embedding version, or None."""
    v = t.reid_embedding_versions
    return conn.execute(sa.select(v.c.model_family, v.c.status).where(v.c.version == version)).first()


def norm_violations(conn: sa.Connection, version: str) -> int:
    """Vectors of ``version`` whose norm is not 1 (to 1e-3)."""
    return conn.execute(sa.text(
        "SELECT count(*) FROM reid_embeddings WHERE version = :v AND NOT (abs(vector_norm(embedding) - 1) <= 1e-3)"
    ), {"v": version}).scalar()


def valid_detections(conn: sa.Connection) -> list[sa.Row]:
    """``(id, deer_id, is_reviewed, class, deer sex)`` of every valid, non-duplicate detection, by id."""
    return conn.execute(sa.text(
        """SELECT d.id::text, d.deer_id::text, d.is_reviewed, COALESCE(d.corrected_classification, d.classification, 'unknown'),
                  dr.sex::text FROM detections d LEFT JOIN deer dr ON dr.id = d.deer_id
           WHERE d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE ORDER BY d.id""")).all()


def crop_paths(conn: sa.Connection, detection_ids: list[str]) -> dict[str, str]:
    return dict(conn.execute(sa.text(
        "SELECT detection_id::text, path FROM reid_crops WHERE status = 'ok' AND detection_id = ANY(CAST(:ids AS uuid[]))"),
        {"ids": detection_ids}).all())


def example_crops(conn: sa.Connection) -> dict[str, str]:
    """One reviewed crop per deer (its first detection): deer id -> crop path."""
    return dict(conn.execute(sa.text(
        """SELECT DISTINCT ON (d.deer_id) d.deer_id::text, c.path FROM detections d
           JOIN reid_crops c ON c.detection_id = d.id AND c.status = 'ok'
           WHERE d.is_reviewed AND d.deer_id IS NOT NULL ORDER BY d.deer_id, d.id""")).all())


def deer_names(conn: sa.Connection) -> dict[str, str]:
    return dict(conn.execute(sa.text("SELECT id::text, name FROM deer")).all())
