"""Queries the antler annotation import/export and the antler features need (besides the
``antler_keypoints`` helpers in ``antler_keypoints.py``): photos by file name, the detections of
photos, buck detections with keypoints and their capture time, and the deer table's antler columns."""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa


def photos(conn: sa.Connection) -> list[tuple[str, str, str]]:
    """(image id, file name, path) of every photo."""
    return [(r[0], r[1], r[2]) for r in conn.execute(sa.text(
        "SELECT id::text, filename, path FROM images ORDER BY filename, id"))]


def detections_of(conn: sa.Connection, image_ids: list[str]) -> dict[str, list[tuple[str, dict, str]]]:
    """image id -> [(detection id, bbox in pixels, class)] of its valid detections (a person's
    correction of the class wins)."""
    out: dict[str, list[tuple[str, dict, str]]] = {i: [] for i in image_ids}
    rows = conn.execute(sa.text(
        """SELECT image_id::text, id::text, bbox, COALESCE(corrected_classification, classification, 'unknown')
           FROM detections WHERE image_id = ANY(CAST(:ids AS uuid[])) AND is_valid IS NOT FALSE
           ORDER BY image_id, id"""), {"ids": image_ids})
    for image_id, det, bbox, cls in rows:
        out[image_id].append((det, bbox if isinstance(bbox, dict) else json.loads(bbox), cls))
    return out


ANNOTATION_PREFIX = "annotation:"  # antler_processing_log.model_version of a person's annotation


def keypointed_detections(conn: sa.Connection, *, annotations_only: bool = False) -> list[dict]:
    """Detections with stored keypoints (only a person's annotations: ``annotations_only``): id,
    image id/path/file name, capture time, bbox, class, deer, whether a person reviewed it."""
    only = (" AND EXISTS (SELECT 1 FROM antler_processing_log l WHERE l.detection_id = d.id"
            f" AND l.model_version LIKE '{ANNOTATION_PREFIX}%')") if annotations_only else ""
    rows = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, i.id::text AS image_id, i.path, i.filename, i."timestamp" AS taken,
                  d.bbox, COALESCE(d.corrected_classification, d.classification, 'unknown') AS classification,
                  d.deer_id::text AS deer_id, d.is_reviewed
           FROM detections d JOIN images i ON i.id = d.image_id
           WHERE d.is_valid IS NOT FALSE AND EXISTS (SELECT 1 FROM antler_keypoints k WHERE k.detection_id = d.id)"""
        + only + " ORDER BY i.filename, d.id")).mappings()
    return [dict(r) for r in rows]


def detection_times(conn: sa.Connection, detection_ids: list[str]) -> dict[str, datetime]:
    return dict(conn.execute(sa.text(
        """SELECT d.id::text, i."timestamp" FROM detections d JOIN images i ON i.id = d.image_id
           WHERE d.id = ANY(CAST(:ids AS uuid[]))"""), {"ids": detection_ids}).all())


def write_deer_antlers(conn: sa.Connection, rows: list[dict]) -> int:
    """Set ``deer.antler_points``, ``antler_description`` and the ``antlers`` key of
    ``physical_features`` (rows with ``deer_id``, ``antler_points``, ``antler_description``,
    ``physical_features`` as a dict holding ``antlers``); its other keys (marks, body size) are kept."""
    if not rows:
        return 0
    conn.execute(sa.text(
        """UPDATE deer SET antler_points = :antler_points, antler_description = :antler_description,
                           physical_features = (COALESCE(physical_features, '{}'::jsonb) - 'antlers')
                                               || CAST(:physical_features AS jsonb)
           WHERE id = CAST(:deer_id AS uuid)"""),
        [{**r, "physical_features": json.dumps(r["physical_features"])} for r in rows])
    return len(rows)


def detections_to_predict(conn: sa.Connection) -> list[dict]:
    """Valid detections whose keypoints no person annotated: id, class, bbox and the photo's path
    (the caller keeps the bucks)."""
    rows = conn.execute(sa.text(
        f"""SELECT d.id::text AS detection_id, i.path, d.bbox,
                  COALESCE(d.corrected_classification, d.classification, 'unknown') AS classification
           FROM detections d JOIN images i ON i.id = d.image_id
           WHERE d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
             AND NOT EXISTS (SELECT 1 FROM antler_processing_log l WHERE l.detection_id = d.id
                             AND l.model_version LIKE '{ANNOTATION_PREFIX}%')
           ORDER BY i.path, d.id""")).mappings()
    return [{**r, "bbox": r["bbox"] if isinstance(r["bbox"], dict) else json.loads(r["bbox"])} for r in rows]


def scored_detections(conn: sa.Connection) -> list[dict]:
    """Detections whose antlers were processed (annotated or predicted) and whose hidden ground truth
    gives points per side: id, source (``antler_processing_log.model_version``), bbox, the true
    left/right counts and true keypoints (16 x [x, y, visibility], or None)."""
    rows = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, l.model_version AS source, d.bbox,
                  (gt.attributes->>'antler_points_left')::int AS left_true,
                  (gt.attributes->>'antler_points_right')::int AS right_true,
                  gt.attributes->'antler_keypoints' AS keypoints_true
           FROM antler_processing_log l JOIN detections d ON d.id = l.detection_id
           JOIN reid_ground_truth gt ON gt.detection_id = d.id
           WHERE gt.sex = 'buck' AND gt.attributes ? 'antler_points_left' AND gt.attributes ? 'antler_points_right'
           ORDER BY d.id""")).mappings()
    return [{**r, "bbox": r["bbox"] if isinstance(r["bbox"], dict) else json.loads(r["bbox"])} for r in rows]
