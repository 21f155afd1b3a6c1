"""SQL of the review app's antler page: a detection's box and crop size, who or what wrote its
stored keypoints, and the buck detections to annotate. Keypoints themselves are read and written by
``antler_keypoints``."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from deer_reid_assets.core.classes import sql_sex_of


def crop_geometry(conn: sa.Connection, detection_id: str) -> dict[str, Any] | None:
    """The detection's bbox (photo pixels), its ok crop's size, class and deer; None without a crop."""
    row = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, d.bbox, c.width, c.height, d.deer_id::text AS deer_id,
                  COALESCE(d.corrected_classification, d.classification, 'unknown') AS classification
           FROM detections d JOIN reid_crops c ON c.detection_id = d.id AND c.status = 'ok'
           WHERE d.id::text = :d"""), {"d": detection_id}).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["bbox"] = out["bbox"] if isinstance(out["bbox"], dict) else json.loads(out["bbox"])
    return out


def keypoint_source(conn: sa.Connection, detection_id: str) -> dict[str, Any] | None:
    """The processing log of the detection's keypoints (model_version: a model or 'annotation:...')."""
    row = conn.execute(sa.text(
        """SELECT model_version, processed_at, keypoints_count, processing_notes FROM antler_processing_log
           WHERE detection_id::text = :d"""), {"d": detection_id}).mappings().first()
    return dict(row) if row else None


def buck_detections(conn: sa.Connection, annotation_prefix: str, limit: int = 200) -> list[dict[str, Any]]:
    """Valid buck detections with a crop: not yet annotated by a person first (model predictions before
    nothing), then annotated ones; with the source and number of their stored keypoints."""
    rows = conn.execute(sa.text(
        f"""SELECT d.id::text AS detection_id, l.model_version, COALESCE(l.keypoints_count, 0) AS keypoints,
                   COALESCE(l.model_version LIKE :p, false) AS annotated
            FROM detections d JOIN reid_crops c ON c.detection_id = d.id AND c.status = 'ok'
            LEFT JOIN antler_processing_log l ON l.detection_id = d.id
            WHERE d.is_valid IS NOT FALSE AND {sql_sex_of("COALESCE(d.corrected_classification, d.classification)")}
                  = 'buck'
            ORDER BY COALESCE(l.model_version LIKE :p, false), (l.detection_id IS NULL), d.id LIMIT :n"""),
        {"p": annotation_prefix + "%", "n": limit}).mappings().all()
    return [dict(r) for r in rows]


def deer_keypointed_detections(conn: sa.Connection, deer_id: str, annotation_prefix: str) -> list[dict[str, Any]]:
    """The deer's valid detections with stored keypoints: id, photo time, and whether a person
    (``annotation_prefix``) or a model wrote them."""
    rows = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, i."timestamp" AS taken,
                  COALESCE(l.model_version LIKE :p, false) AS annotated
           FROM detections d JOIN images i ON i.id = d.image_id
           LEFT JOIN antler_processing_log l ON l.detection_id = d.id
           WHERE d.deer_id::text = :deer AND d.is_valid IS NOT FALSE
                 AND EXISTS (SELECT 1 FROM antler_keypoints k WHERE k.detection_id = d.id)
           ORDER BY i."timestamp", d.id"""), {"deer": deer_id, "p": annotation_prefix + "%"}).mappings().all()
    return [dict(r) for r in rows]
