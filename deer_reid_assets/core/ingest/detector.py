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
from deer_reid_assets.core.store import detections as det_store
from deer_reid_assets.core.store import photos
from deer_reid_assets.core.store.photos import pending_images
from deer_reid_assets.core.threads import torch_threads_kept


class DetectorError(ValueError):
    """A detector that cannot be loaded or configured."""


@dataclass
class DetectReport:
    weights: str | None
    pending_before: int
    images_processed: int = 0
    detections: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


DETECTOR_DIRS_ENV = "DEER_REID_DETECTOR_DIRS"
MODEL_DEFINITIONS = {".yaml", ".yml"}  # architecture only (parsed with yaml.safe_load), no pickle


def allowed_detector_dirs() -> list[Path]:
    """Folders whose checkpoints may be opened: ``$DEER_REID_HOME/models/detectors`` and the folders in
    ``$DEER_REID_DETECTOR_DIRS`` (separated by ``os.pathsep``). Set by whoever runs the deployment,
    not by run configuration."""
    from deer_reid_assets.core.store.db import reid_home

    extra = [Path(p) for p in os.environ.get(DETECTOR_DIRS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(os.path.realpath(d)) for d in [reid_home() / "models" / "detectors", *extra]]


def check_detector_weights(weights: str | Path) -> Path:
    """``weights`` if it may be opened, else DetectorError, decided BEFORE anything reads the file.
    ultralytics unpickles ``.pt`` checkpoints in full (the weights-only guard off): a pickle that runs
    code when opened. A run-configuration value (editable in the launchpad) therefore only chooses
    among checkpoints an operator put into an allowed folder (resolved: a symlink out of it is refused);
    a model definition (``.yaml``: architecture, random init) holds no pickle and is always allowed."""
    path = Path(weights)
    if path.suffix.lower() in MODEL_DEFINITIONS:
        return path
    real = Path(os.path.realpath(path))
    dirs = allowed_detector_dirs()
    if not any(real == d or d in real.parents for d in dirs):
        raise DetectorError(
            f"detector weights {path} refused: checkpoints are opened only from an allowed folder "
            f"({', '.join(str(d) for d in dirs)}; more in ${DETECTOR_DIRS_ENV}); copy it there (a .pt is a pickle "
            "that can run code when opened)")
    if not real.is_file():
        raise DetectorError(f"detector weights {path} not found (configure a local YOLO .pt checkpoint)")
    return real


def load_detector(weights: str | Path):
    """An ultralytics YOLO model from a checkpoint in an allowed folder (or a model .yaml, for tests)."""
    path = check_detector_weights(weights)
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


@torch_threads_kept()
def detect_pending(engine: sa.Engine, weights: str | Path | None, *, classes: list[str] | None = None,
                   min_confidence: float = 0.25, image_size: int = 640, device: str = "cpu",
                   progress: Callable[[int, int], None] | None = None,
                   image_batches: list[str] | None = None) -> DetectReport:
    """Run the detector on every pending photo (of ``image_batches`` only, when given); without
    ``weights`` it only counts them."""
    with engine.connect() as conn:
        todo = pending_images(conn, image_batches)
    report = DetectReport(weights=str(weights) if weights else None, pending_before=len(todo))
    if weights:
        check_detector_weights(weights)  # refused before anything else, even with nothing to do
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
                photos.mark_failed(conn, image_id, str(exc))
                report.failures.append((path, str(exc)))
                continue
            result = model.predict(img, imgsz=image_size, conf=min_confidence, device=device, verbose=False)[0]
            for (x1, y1, x2, y2), conf, cls in zip(result.boxes.xyxy.tolist(), result.boxes.conf.tolist(),
                                                   result.boxes.cls.tolist()):
                if int(cls) not in wanted:
                    continue
                det_store.insert_detection(conn, image_id=image_id,
                                           bbox={"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1},
                                           confidence=float(conf), classification="unknown")
                report.detections += 1
            photos.mark_completed(conn, image_id)
            report.images_processed += 1
        if progress:
            progress(n, len(todo))
    return report
