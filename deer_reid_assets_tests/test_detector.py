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


def test_detector_errors_name_the_problem(engine, pending_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(detector.DETECTOR_DIRS_ENV, str(tmp_path))
    with pytest.raises(detector.DetectorError, match=r"detector weights .*missing\.pt not found"):
        detector.detect_pending(engine, tmp_path / "missing.pt")
    with pytest.raises(detector.DetectorError, match="none of the classes \\['moose'\\]"):
        detector.detect_pending(engine, "yolov8n.yaml", classes=["moose"])


class _Payload:
    """What a crafted checkpoint does when unpickled: leave a file behind."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_outside_the_allowed_folders_are_refused_before_they_are_opened(engine, pending_folder, tmp_path,
                                                                                   monkeypatch, reid_home):
    """Issue 12: `detections.detector_weights` (editable in the launchpad) went to ultralytics, which
    unpickles with weights_only=False: a crafted .pt ran code before any error appeared."""
    import pickle

    marker = tmp_path / "code_ran"
    crafted = tmp_path / "elsewhere" / "yolo.pt"
    crafted.parent.mkdir()
    crafted.write_bytes(pickle.dumps(_Payload(str(marker))))
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "link.pt").symlink_to(crafted)  # a symlink out of the allowed folder is refused too
    monkeypatch.setenv(detector.DETECTOR_DIRS_ENV, str(allowed))
    for weights in (crafted, allowed / "link.pt", allowed / ".." / "elsewhere" / "yolo.pt"):
        with pytest.raises(detector.DetectorError, match="refused: checkpoints are opened only from an allowed folder"):
            detector.detect_pending(engine, weights)
    assert not marker.exists()
    with engine.connect() as conn:  # nothing was processed
        assert conn.execute(sa.text("SELECT count(*) FROM images WHERE processing_status = 'pending'")).scalar() == 2
    inside = reid_home / "models" / "detectors" / "yolo.pt"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"placeholder")
    assert detector.check_detector_weights(inside) == inside.resolve()  # the default folder is allowed
    assert detector.check_detector_weights("yolov8n.yaml").name == "yolov8n.yaml"  # a definition holds no pickle
