"""The keypoint model's predictions into ``antler_keypoints``, for the buck detections no person annotated.

The registered model (``reid_antler_models``) runs once per photo at the size it was trained at; each
buck detection takes the predicted animal whose box overlaps it most (IoU >= ``min_iou``) and its
16 points, with the model's confidence per point: visibility 2 from confidence 0.5, 1 from 0.25,
below that the point is left out. A detection with no overlapping prediction gets no keypoints (logged as
"no antlers found"). Each write is logged with the model's version, so annotations are never
overwritten and a newer model replaces an older model's points.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core import classes
from deer_reid_assets.core.antlers import detector, layout
from deer_reid_assets.core.store import antler_annotations as q
from deer_reid_assets.core.store import antler_keypoints as kp_store
from deer_reid_assets.core.threads import torch_threads_kept

MIN_IOU = 0.3


def _visibility(confidence: float) -> int:
    return 2 if confidence >= 0.5 else (1 if confidence >= 0.25 else 0)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@torch_threads_kept()
def predict_keypoints(engine: sa.Engine, model: dict, *, device: str = "cpu", settings_dir: Path,
                      min_iou: float = MIN_IOU) -> dict:
    """Run ``model`` (a ``reid_antler_models`` row) on every buck detection without a person's
    annotation and store its keypoints; a summary (photos, detections, with keypoints)."""
    with engine.connect() as conn:
        todo = [r for r in q.detections_to_predict(conn) if classes.sex_of(r["classification"]) == "buck"]
    by_photo: dict[str, list[dict]] = defaultdict(list)
    for r in todo:
        by_photo[r["path"]].append(r)
    YOLO = detector._ultralytics(Path(settings_dir))
    net = YOLO(model["checkpoint_path"], task="pose")
    imgsz = detector.PROFILES.get(model["profile"], detector.PROFILES["cpu"])["imgsz"]
    written = found = 0
    for path, dets in sorted(by_photo.items()):
        result = net.predict(path, imgsz=imgsz, device=device, verbose=False, conf=0.05)[0]
        boxes = result.boxes.xyxy.tolist() if result.boxes is not None else []
        kpts = result.keypoints.data.tolist() if result.keypoints is not None and boxes else []
        with engine.begin() as conn:
            for det in dets:
                b = det["bbox"]
                box = (b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"])
                best = max(range(len(boxes)), key=lambda k: _iou(box, boxes[k]), default=None)
                points = []
                if best is not None and _iou(box, boxes[best]) >= min_iou:
                    points = [layout.Point(i, x, y, _visibility(c), min(1.0, max(0.0, c)))
                              for i, (x, y, c) in enumerate(kpts[best][: layout.N_KEYPOINTS])
                              if _visibility(c) > 0]
                kp_store.write(conn, det["detection_id"], points, model_version=model["version"],
                               notes="predicted" if points else "no antlers found")
                written += 1
                found += bool(points)
    return {"photos": len(by_photo), "detections": written, "with_keypoints": found, "model_version": model["version"]}
