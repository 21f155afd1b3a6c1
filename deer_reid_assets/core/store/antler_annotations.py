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
    """Set ``deer.antler_points``, ``antler_description`` and ``physical_features`` (rows with
    ``deer_id``, ``antler_points``, ``antler_description``, ``physical_features`` as a dict)."""
    if not rows:
        return 0
    conn.execute(sa.text(
        """UPDATE deer SET antler_points = :antler_points, antler_description = :antler_description,
                           physical_features = CAST(:physical_features AS jsonb)
           WHERE id = CAST(:deer_id AS uuid)"""),
        [{**r, "physical_features": json.dumps(r["physical_features"])} for r in rows])
    return len(rows)


def point_truth(conn: sa.Connection) -> dict[str, tuple[int, int]]:
    """detection id -> (left, right) antler points of the hidden ground truth, for detections that
    have stored keypoints and a per-side count in ``reid_ground_truth.attributes``."""
    rows = conn.execute(sa.text(
        """SELECT gt.detection_id::text, gt.attributes->>'antler_points_left', gt.attributes->>'antler_points_right'
           FROM reid_ground_truth gt
           WHERE gt.attributes ? 'antler_points_left' AND gt.attributes ? 'antler_points_right'
             AND EXISTS (SELECT 1 FROM antler_keypoints k WHERE k.detection_id = gt.detection_id)"""))
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}
