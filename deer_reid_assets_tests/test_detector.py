"""The optional ultralytics detector on photos that came without detections. No trained YOLO weights
can be had here, so a YOLOv8n built from its model definition (random init) stands in: it exercises
the real loading, prediction, class filter and database writes."""

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest import detector
from deer_reid_assets.core.ingest import importer as ingest


@pytest.fixture
def pending_folder(engine, tmp_path):
    root = tmp_path / "uploads"
    (root / "cam07").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype("uint8")).save(root / "cam07" / f"p{i}.jpg")
    (root / "cam07" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    report = ingest.import_sidecar_folder(engine, root)
    assert report.images_pending_detection == 2 and report.images_failed == 1
    return root


def test_without_weights_photos_stay_pending(engine, pending_folder):
    report = detector.detect_pending(engine, None)
    assert report.pending_before == 2 and report.images_processed == 0
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM images WHERE processing_status = 'pending'")).scalar() == 2


def test_detector_runs_on_pending_photos_and_writes_detections(engine, pending_folder):
    report = detector.detect_pending(engine, "yolov8n.yaml", min_confidence=0.0001, image_size=160)
    assert report.images_processed == 2
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT processing_status::text, count(*) FROM images GROUP BY 1")).all())
        boxes = conn.execute(sa.text("SELECT bbox, confidence, classification FROM detections")).all()
    assert statuses == {"completed": 2, "failed": 1}
    assert len(boxes) == report.detections
    for bbox, confidence, classification in boxes:
        assert bbox["width"] > 0 and bbox["height"] > 0 and 0 < confidence <= 1 and classification == "unknown"
    # nothing is pending any more: a second run has nothing to do
    assert detector.detect_pending(engine, "yolov8n.yaml").pending_before == 0


def test_detector_errors_name_the_problem(engine, pending_folder, tmp_path):
    with pytest.raises(detector.DetectorError, match=r"detector weights .*missing\.pt not found"):
        detector.detect_pending(engine, tmp_path / "missing.pt")
    with pytest.raises(detector.DetectorError, match="none of the classes \\['moose'\\]"):
        detector.detect_pending(engine, "yolov8n.yaml", classes=["moose"])
