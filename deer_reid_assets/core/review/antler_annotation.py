"""The antler page of the review app: a buck's crop with its 16 keypoints (stored ones: a model's
prediction or an earlier annotation), per-side counts, and a person's annotation saved to the
existing system's ``antler_keypoints`` through ``store.antler_keypoints.write``.

The page works in pixels of the crop; ``antler_keypoints`` holds pixels of the photo. The crop is the
detection's box clamped to the photo (``ingest.imaging.clamp_box``), so a crop pixel is the photo
pixel minus the box's clamped top-left corner."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import sqlalchemy as sa

from deer_reid_assets.core.antlers import features, layout
from deer_reid_assets.core.ingest.imaging import BoxError, parse_bbox
from deer_reid_assets.core.store import antler_keypoints as kp_store
from deer_reid_assets.core.store import antler_review as store
from deer_reid_assets.core.store.antler_annotations import ANNOTATION_PREFIX

from .actions import ReviewError

SOURCE = ANNOTATION_PREFIX + "review-app"  # antler_processing_log.model_version of an annotation made here


@dataclass
class AntlerPage:
    detection_id: str
    width: int   # crop pixels
    height: int
    points: list[dict]   # stored keypoints in crop pixels: {index, name, x, y, visibility, confidence}
    source: str | None   # who wrote them: a model version or 'annotation:...'; None: nothing stored
    counts: str          # per-side counts of the stored points ('8-point typical (4L/4R) ...')
    left: int
    right: int
    classification: str


def _origin(bbox: dict) -> tuple[int, int]:
    try:
        x, y, _, _ = parse_bbox(bbox)
    except BoxError as exc:
        raise ReviewError(f"detection box unusable: {exc}") from None
    return max(0, int(round(x))), max(0, int(round(y)))


def page(conn: sa.Connection, detection_id: str) -> AntlerPage | None:
    """What the page shows; None when the detection has no crop."""
    geo = store.crop_geometry(conn, detection_id)
    if geo is None:
        return None
    ox, oy = _origin(geo["bbox"])
    stored = kp_store.read(conn, [detection_id]).get(detection_id, [])
    log = store.keypoint_source(conn, detection_id)
    found = features.compute(stored)
    return AntlerPage(
        detection_id=detection_id, width=int(geo["width"]), height=int(geo["height"]),
        points=[{"index": p.index, "name": p.name, "x": p.x - ox, "y": p.y - oy, "visibility": p.visibility,
                 "confidence": p.confidence} for p in stored],
        source=log["model_version"] if log else None, counts=found.description() if stored else "no keypoints stored",
        left=found.left_points, right=found.right_points, classification=geo["classification"])


def parse_points(raw: str, width: int, height: int) -> list[dict]:
    """The page's JSON (``[{index, x, y, visibility}]`` in crop pixels) checked: indices 0-15 once,
    visibility 1 or 2, finite coordinates inside the crop. A ReviewError names the first bad point."""
    try:
        items = json.loads(raw or "[]")
    except ValueError:
        raise ReviewError("keypoints are not valid JSON") from None
    if not isinstance(items, list):
        raise ReviewError("keypoints must be a list")
    out, seen = [], set()
    for item in items:
        try:
            i, x, y, v = int(item["index"]), float(item["x"]), float(item["y"]), int(item.get("visibility", 2))
        except (KeyError, TypeError, ValueError):
            raise ReviewError(f"keypoint {item!r} needs index, x, y and visibility") from None
        name = layout.KEYPOINT_NAMES[i] if 0 <= i < layout.N_KEYPOINTS else f"index {i}"
        if not 0 <= i < layout.N_KEYPOINTS or i in seen:
            raise ReviewError(f"keypoint {name}: index must be 0-15 and given once")
        if v not in (1, 2):
            raise ReviewError(f"keypoint {name}: visibility must be 1 (occluded) or 2 (visible), got {v}")
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= width and 0 <= y <= height):
            raise ReviewError(f"keypoint {name}: ({x:g}, {y:g}) lies outside the {width}x{height} crop")
        seen.add(i)
        out.append({"index": i, "x": x, "y": y, "visibility": v})
    return sorted(out, key=lambda p: p["index"])


def save(engine: sa.Engine, detection_id: str, raw_points: str, *, reviewer: str) -> AntlerPage:
    """Store a person's keypoints (crop pixels, as the page sends them) for the detection, replacing
    what was stored, in one transaction; an empty list records 'no antlers'. Returns the new page."""
    reviewer = (reviewer or "").strip()[:60]
    if not reviewer:
        raise ReviewError("a reviewer name is required")
    with engine.begin() as conn:
        geo = store.crop_geometry(conn, detection_id)
        if geo is None:
            raise ReviewError(f"detection {detection_id} has no crop to annotate")
        points = parse_points(raw_points, int(geo["width"]), int(geo["height"]))
        ox, oy = _origin(geo["bbox"])
        kp_store.write(conn, detection_id, [layout.Point(p["index"], p["x"] + ox, p["y"] + oy, p["visibility"], 1.0)
                                            for p in points],
                       model_version=SOURCE, notes=f"annotated by {reviewer} in the review app")
        return page(conn, detection_id)


def accept(engine: sa.Engine, detection_id: str, *, reviewer: str) -> AntlerPage:
    """A person checked the stored (predicted) keypoints and they are right: stored again as theirs."""
    with engine.connect() as conn:
        current = page(conn, detection_id)
    if current is None:
        raise ReviewError(f"detection {detection_id} has no crop to annotate")
    if current.source is None:
        raise ReviewError("no stored keypoints to accept: click them first")
    keep = [{"index": p["index"], "x": min(max(p["x"], 0.0), current.width),  # a model may point just outside
             "y": min(max(p["y"], 0.0), current.height), "visibility": p["visibility"]}
            for p in current.points if p["visibility"] in (1, 2)]
    return save(engine, detection_id, json.dumps(keep), reviewer=reviewer)


def worklist(conn: sa.Connection, limit: int = 200) -> list[dict]:
    """Buck detections to annotate: not yet annotated by a person first."""
    return store.buck_detections(conn, ANNOTATION_PREFIX, limit)
