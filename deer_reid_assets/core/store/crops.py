"""The crops' SQL (``reid_crops``): the detections still to crop and the crop rows written for them
(``core/ingest/crops.py`` cuts the crops). Callers own the transaction."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core.store import schema as t

_ROW_COLUMNS = ("status", "path", "width", "height", "clamped", "reject_reason", "crop_version")


def uncropped_detections(conn: sa.Connection, crop_version: str,
                         image_batches: list[str] | None = None) -> list[tuple[str, str, str, dict]]:
    """(detection id, image id, image path, bbox) of valid detections without a crop of ``crop_version``
    (of the photos imported under ``image_batches`` only, when given), by photo."""
    d, i, c, f = t.detections, t.images, t.reid_crops, t.reid_image_files
    query = (
        sa.select(d.c.id, i.c.id, i.c.path, d.c.bbox)
        .join(i, i.c.id == d.c.image_id)
        .outerjoin(c, sa.and_(c.c.detection_id == d.c.id, c.c.crop_version == crop_version))
        .where(c.c.detection_id.is_(None), d.c.is_valid.isnot(False))
        .order_by(i.c.id, d.c.id)
    )
    if image_batches:
        query = query.join(f, f.c.image_id == i.c.id).where(f.c.import_batch.in_(image_batches))
    return [tuple(r) for r in conn.execute(query)]


def write_crops(conn: sa.Connection, rows: list[dict]) -> None:
    """Write one crop row per detection (a detection's earlier row is replaced)."""
    stmt = pg_insert(t.reid_crops).values(rows)
    conn.execute(stmt.on_conflict_do_update(index_elements=[t.reid_crops.c.detection_id],
                                            set_={c: stmt.excluded[c] for c in _ROW_COLUMNS}))
