"""The queries of the upload fast path (``core/upload_path.py``): an upload batch's detections, the
vectors a version lacks (or has) for them, the ones never matched, and adding vectors to a version."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core.store import schema as t


def batch_detections(conn: sa.Connection, batches: list[str]) -> list[str]:
    """Ids of the valid, non-duplicate detections of the photos imported under ``batches``."""
    d, f = t.detections, t.reid_image_files
    query = (sa.select(d.c.id).join(f, f.c.image_id == d.c.image_id)
             .where(f.c.import_batch.in_(batches), d.c.is_valid.isnot(False), d.c.is_duplicate.isnot(True))
             .order_by(d.c.id))
    return list(conn.execute(query).scalars())


def lacking_vectors(conn: sa.Connection, version: str, crops: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (detection id, crop path) of ``crops`` that ``version`` has no vector for."""
    if not crops:
        return []
    e = t.reid_embeddings
    have = set(conn.execute(sa.select(e.c.detection_id).where(
        e.c.version == version, e.c.detection_id.in_([d for d, _ in crops]))).scalars())
    return [(d, p) for d, p in crops if d not in have]


def vectors_present(conn: sa.Connection, versions: list[str], detection_ids: list[str]) -> list[tuple[str, str]]:
    """(detection id, version) of each vector the ``versions`` have for ``detection_ids``."""
    if not detection_ids:
        return []
    e = t.reid_embeddings
    return [tuple(r) for r in conn.execute(sa.select(e.c.detection_id, e.c.version)
                                           .where(e.c.version.in_(versions), e.c.detection_id.in_(detection_ids)))]


def never_matched(conn: sa.Connection, detection_ids: list[str]) -> list[str]:
    """The unreviewed ones of ``detection_ids`` that no matching run has logged yet."""
    if not detection_ids:
        return []
    d, lg = t.detections, t.reid_assignment_log
    logged = sa.select(lg.c.detection_id).where(lg.c.detection_id == d.c.id).exists()
    return list(conn.execute(sa.select(d.c.id).where(d.c.id.in_(detection_ids), d.c.is_reviewed.isnot(True), ~logged)
                             .order_by(d.c.id)).scalars())


def add_vectors(conn: sa.Connection, version: str, detection_ids: list[str], vectors: np.ndarray) -> int:
    """Add vectors to an existing version (a vector already there is kept); returns how many were added."""
    if not detection_ids:
        return 0
    added = conn.execute(pg_insert(t.reid_embeddings).values(
        [{"version": version, "detection_id": d, "embedding": v} for d, v in zip(detection_ids, vectors)]
    ).on_conflict_do_nothing()).rowcount
    v = t.reid_embedding_versions
    conn.execute(sa.update(v).where(v.c.version == version).values(n_embeddings=v.c.n_embeddings + added))
    return added


def batch_progress(conn: sa.Connection, batch: str) -> dict[str, int]:
    """How far an upload batch is: its detections, those with a crop row, with an ok crop, and those a
    matching run has logged (assigned, proposed or left unassigned)."""
    row = conn.execute(sa.text(
        """
        SELECT count(*) AS detections,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM reid_crops c WHERE c.detection_id = d.id)) AS cropped,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM reid_crops c WHERE c.detection_id = d.id
                                                                           AND c.status = 'ok')) AS crops_ok,
               count(*) FILTER (WHERE EXISTS (SELECT 1 FROM reid_assignment_log l WHERE l.detection_id = d.id)) AS matched
        FROM detections d JOIN reid_image_files f ON f.image_id = d.image_id
        WHERE f.import_batch = :batch
        """), {"batch": batch}).mappings().one()
    return dict(row)
