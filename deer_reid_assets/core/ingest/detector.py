"""Optional detection of deer in photos that came without detections, with an ultralytics YOLO model.

Only runs when the user configures detector weights (a local ``.pt`` checkpoint: nothing is
downloaded). Photos still pending after the detector ran get ``processing_status = 'completed'``
(with or without deer); photos that fail to load get ``'failed'`` with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest.imaging import ImageError, load_image
from deer_reid_assets.core.store import schema as t


class DetectorError(ValueError):
    """A detector that cannot be loaded or configured."""


@dataclass
class DetectReport:
    weights: str | None
    pending_before: int
    images_processed: int = 0
    detections: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


def pending_images(conn: sa.Connection) -> list[tuple[str, str]]:
    i = t.images
    return [(r[0], r[1]) for r in conn.execute(
        sa.select(i.c.id, i.c.path).where(i.c.processing_status == "pending").order_by(i.c.id))]


def load_detector(weights: str | Path):
    """An ultralytics YOLO model from a local checkpoint (or a model .yaml, for tests)."""
    path = Path(weights)
    if path.suffix == ".pt" and not path.is_file():
        raise DetectorError(f"detector weights {path} not found (configure a local YOLO .pt checkpoint)")
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never fetch assets or check for updates at run time
    pil_open = Image.open
    from ultralytics import YOLO

    # ultralytics replaces PIL.Image.open process-wide with a version that tries to pip-install
    # pi-heif when a file is unreadable; corrupt camera files must stay a clear, recorded error.
    Image.open = pil_open

    try:
        return YOLO(str(path), task="detect")
    except Exception as exc:  # noqa: BLE001 - ultralytics raises many kinds
        raise DetectorError(f"detector weights {path} could not be loaded: {exc}") from exc


def detect_pending(engine: sa.Engine, weights: str | Path | None, *, classes: list[str] | None = None,
                   min_confidence: float = 0.25, image_size: int = 640, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None) -> DetectReport:
    """Run the detector on every pending photo; without ``weights`` it only counts them."""
    with engine.connect() as conn:
        todo = pending_images(conn)
    report = DetectReport(weights=str(weights) if weights else None, pending_before=len(todo))
    if not weights or not todo:
        return report
    model = load_detector(weights)
    names = model.names if isinstance(model.names, dict) else dict(enumerate(model.names))
    wanted = {k for k, v in names.items() if classes is None or v in classes}
    if classes is not None and not wanted:
        raise DetectorError(f"none of the classes {classes} is known to the detector (it has {sorted(names.values())})")
    for n, (image_id, path) in enumerate(todo, start=1):
        with engine.begin() as conn:
            try:
                img = load_image(path)
            except ImageError as exc:
                conn.execute(sa.update(t.images).where(t.images.c.id == image_id)
                             .values(processing_status="failed", error_message=str(exc)))
                report.failures.append((path, str(exc)))
                continue
            result = model.predict(img, imgsz=image_size, conf=min_confidence, device=device, verbose=False)[0]
            for (x1, y1, x2, y2), conf, cls in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(),
                                                   result.boxes.cls.tolist()):
                if int(cls) not in wanted:
                    continue
                conn.execute(sa.insert(t.detections).values(
                    image_id=image_id, bbox={"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1},
                    confidence=float(conf), classification="unknown"))
                report.detections += 1
            conn.execute(sa.update(t.images).where(t.images.c.id == image_id).values(processing_status="completed"))
            report.images_processed += 1
        if progress:
            progress(n, len(todo))
    return report
