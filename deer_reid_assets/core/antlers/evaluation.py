"""Point-count accuracy: the counts from stored keypoints against the hidden ground truth."""

from __future__ import annotations

import sqlalchemy as sa

from deer_reid_assets.core.antlers import features
from deer_reid_assets.core.antlers.profiles import detection_features
from deer_reid_assets.core.store import antler_annotations as q


def point_count_accuracy(conn: sa.Connection, *, min_confidence: float = features.DEFAULT_MIN_CONFIDENCE) -> dict:
    """Exact-count accuracy per side (and of the total) over buck detections with keypoints and a
    ground-truth count; ``None`` rates when there are none."""
    truth = q.point_truth(conn)
    scored = [(d.features, truth[d.detection_id]) for d in detection_features(conn, min_confidence=min_confidence)
              if d.detection_id in truth]
    n = len(scored)

    def rate(hits: int) -> float | None:
        return hits / n if n else None

    return {"detections": n,
            "left_exact": rate(sum(f.left_points == t[0] for f, t in scored)),
            "right_exact": rate(sum(f.right_points == t[1] for f, t in scored)),
            "total_exact": rate(sum(f.total_points == t[0] + t[1] for f, t in scored))}
