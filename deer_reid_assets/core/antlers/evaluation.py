"""Point-count accuracy: the counts from stored keypoints against the hidden ground truth, per source.

Every buck detection whose antlers were processed (``antler_processing_log``) and whose ground truth
gives points per side is scored, grouped by where its keypoints came from: ``annotations`` (a
person's, imported) or ``model`` (the keypoint model's predictions). A processed detection with no
stored keypoints (the model found no antlers on it) counts as 0 points per side: a miss is an error.
``keypoint_error`` (model only, where the truth has keypoints): mean distance from each truly seen
point (visibility >= 1) to the predicted one, as a fraction of the detection box's diagonal; a point
the model did not give counts as a full diagonal.
"""

from __future__ import annotations

import math

import sqlalchemy as sa

from deer_reid_assets.core.antlers import features
from deer_reid_assets.core.store import antler_annotations as q
from deer_reid_assets.core.store import antler_keypoints as kp_store


def _source(model_version: str) -> str:
    return "annotations" if model_version.startswith(q.ANNOTATION_PREFIX) else "model"


def point_count_accuracy(conn: sa.Connection, *, min_confidence: float = features.DEFAULT_MIN_CONFIDENCE) -> dict:
    """``{"annotations": {...}, "model": {...}}``, each with ``detections`` and exact-count rates
    ``left_exact`` / ``right_exact`` / ``total_exact`` (None when there are no detections)."""
    rows = q.scored_detections(conn)
    points = kp_store.read(conn, [r["detection_id"] for r in rows]) if rows else {}
    out = {}
    for source in ("annotations", "model"):
        mine = [r for r in rows if _source(r["source"]) == source]
        hits = {"left": 0, "right": 0, "total": 0}
        errors: list[float] = []
        for r in mine:
            pts = points.get(r["detection_id"], [])
            f = features.compute(pts, min_confidence=min_confidence)
            hits["left"] += f.left_points == r["left_true"]
            hits["right"] += f.right_points == r["right_true"]
            hits["total"] += f.total_points == r["left_true"] + r["right_true"]
            if source == "model" and r["keypoints_true"]:
                errors.extend(_errors(pts, r["keypoints_true"], r["bbox"]))
        n = len(mine)
        out[source] = {"detections": n, **{f"{k}_exact": (v / n if n else None) for k, v in hits.items()}}
        if source == "model":
            out[source]["keypoint_error"] = sum(errors) / len(errors) if errors else None
    return out


def _errors(predicted, truth: list, bbox: dict) -> list[float]:
    diag = math.hypot(bbox["width"], bbox["height"]) or 1.0
    given = {p.index: p for p in predicted if p.visibility > 0}
    out = []
    for index, (x, y, v) in enumerate(truth):
        if v:
            p = given.get(index)
            out.append(1.0 if p is None else min(1.0, math.hypot(p.x - x, p.y - y) / diag))
    return out
