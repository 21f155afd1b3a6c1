"""The existing system's antler keypoints (its migration 020) and processing log (021).

16 keypoints per detection: 0-7 on the left antler (main_beam, brow_tine, g2, g3, g4, tip,
bez_tine, royal_tine), 8-15 the same on the right; ``visibility`` 0 = not visible, 1 = occluded,
2 = visible; ``confidence`` in [0, 1]; ``x``/``y`` in pixels of the photo. Writing a detection's
keypoints replaces the ones it had, in one transaction, and logs the processing as its worker does.
"""

from __future__ import annotations

import sqlalchemy as sa

from deer_reid_assets.core.antlers.layout import KEYPOINT_NAMES, PARTS  # noqa: F401  (re-exported)
from deer_reid_assets.core.antlers.layout import Point as Keypoint


def _check(points: list[Keypoint], detection_id: str) -> None:
    seen = set()
    for p in points:
        where = f"keypoint {p.index} of detection {detection_id}"
        if not 0 <= p.index < len(KEYPOINT_NAMES):
            raise ValueError(f"{where}: index must be 0-15")
        if p.index in seen:
            raise ValueError(f"{where}: given twice")
        if p.visibility not in (0, 1, 2):
            raise ValueError(f"{where}: visibility must be 0, 1 or 2, got {p.visibility}")
        if not 0.0 <= p.confidence <= 1.0:
            raise ValueError(f"{where}: confidence must be in [0, 1], got {p.confidence}")
        if not (p.x == p.x and p.y == p.y) or abs(p.x) == float("inf") or abs(p.y) == float("inf"):
            raise ValueError(f"{where}: x and y must be finite numbers")
        seen.add(p.index)


def write(conn: sa.Connection, detection_id: str, points: list[Keypoint], *, model_version: str,
          notes: str | None = None) -> int:
    """Replace ``detection_id``'s keypoints with ``points`` (none: no antlers found) and log it."""
    _check(points, detection_id)
    conn.execute(sa.text("DELETE FROM antler_keypoints WHERE detection_id = :d"), {"d": detection_id})
    if points:
        conn.execute(sa.text(
            "INSERT INTO antler_keypoints (detection_id, keypoint_index, keypoint_name, x, y, visibility, confidence) "
            "VALUES (:d, :i, :n, :x, :y, :v, :c)"),
            [{"d": detection_id, "i": p.index, "n": p.name, "x": float(p.x), "y": float(p.y), "v": p.visibility,
              "c": float(p.confidence)} for p in points])
    conn.execute(sa.text(
        """INSERT INTO antler_processing_log (detection_id, antlers_detected, keypoints_count, model_version,
                                              processing_notes)
           VALUES (:d, :a, :n, :m, :notes)
           ON CONFLICT (detection_id) DO UPDATE SET processed_at = CURRENT_TIMESTAMP,
               antlers_detected = EXCLUDED.antlers_detected, keypoints_count = EXCLUDED.keypoints_count,
               model_version = EXCLUDED.model_version, processing_notes = EXCLUDED.processing_notes"""),
        {"d": detection_id, "a": bool(points), "n": len(points), "m": model_version, "notes": notes})
    return len(points)


def read(conn: sa.Connection, detection_ids: list[str] | None = None) -> dict[str, list[Keypoint]]:
    """detection id -> its keypoints in index order (all detections with keypoints when None)."""
    query = ("SELECT detection_id::text, keypoint_index, x, y, visibility, confidence FROM antler_keypoints"
             + (" WHERE detection_id = ANY(CAST(:ids AS uuid[]))" if detection_ids is not None else "")
             + " ORDER BY detection_id, keypoint_index")
    out: dict[str, list[Keypoint]] = {}
    for det, i, x, y, v, c in conn.execute(sa.text(query), {"ids": detection_ids or []}):
        out.setdefault(det, []).append(Keypoint(i, x, y, v, c))
    return out
