"""The existing system's antler files import without edits: `deer-reid antlers import` on hand-made
files in the shape of its YOLOv8-pose export (`antler_yolo_<date>/`: data.yaml with another machine's
absolute path and extra keys, labels/<split>/<hash>-<uuid>_<photo>.txt, ultralytics' labels/*.cache,
no images) and of its Label Studio export (controls `bbox` / `antler_points`, `markings` rectangles,
choices and notes, upload-prefixed photo names). The values are ours; only the shape is theirs."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner
from PIL import Image

from deer_reid_assets.cli import main
from deer_reid_assets.core.antlers import features
from deer_reid_assets.core.store import antler_keypoints as kp_store

from .test_matching import add_detection

FIXTURES = Path(__file__).parent / "fixtures" / "existing_system_antlers"
W, H = 3840, 2160
# the photos as the existing system stores them (its file names, before the exporter's prefix), each
# with its detections (class, box as centre x, centre y, width, height relative to the photo)
PHOTOS = {
    "Ridge1_20251024_064512_001.jpg": [("buck", (0.4125, 0.56125, 0.247396, 0.413194)),
                                       ("doe", (0.78125, 0.602083, 0.11875, 0.170833))],
    "Creek2_20251103_181207_001.jpg": [("buck", (0.640104, 0.697222, 0.301042, 0.455556))],
    "ORCHARD_04417.jpg": [("doe", (0.455729, 0.640278, 0.286458, 0.347222))],
}


def _store_photos(engine, tmp_path: Path) -> dict[str, str]:
    """The photos (plain 3840 x 2160 JPEGs) and their detections; photo name -> its buck's detection id."""
    bucks = {}
    with engine.begin() as conn:
        for name, dets in PHOTOS.items():
            path = tmp_path / name
            Image.new("RGB", (W, H), (90, 110, 70)).save(path, quality=50)
            image_id = None
            for cls, (cx, cy, w, h) in dets:
                det = add_detection(conn, cls)
                bbox = {"x": (cx - w / 2) * W, "y": (cy - h / 2) * H, "width": w * W, "height": h * H}
                if image_id is None:
                    image_id = conn.execute(sa.text("SELECT image_id FROM detections WHERE id = :d"), {"d": det}).scalar()
                    conn.execute(sa.text("UPDATE images SET filename = :f, path = :p WHERE id = :i"),
                                 {"f": name, "p": str(path), "i": image_id})
                conn.execute(sa.text("UPDATE detections SET image_id = :i, bbox = CAST(:b AS json) WHERE id = :d"),
                             {"i": image_id, "b": json.dumps(bbox), "d": det})
                if cls == "buck":
                    bucks[name] = det
    return bucks


def _counts(engine, det: str) -> tuple[int, int, int]:
    with engine.connect() as conn:
        points = kp_store.read(conn, [det]).get(det, [])
    f = features.compute(points)
    return len(points), f.left_points, f.right_points


def test_its_yolo_export_and_its_label_studio_export_import_without_edits(engine, tmp_path):
    bucks = _store_photos(engine, tmp_path)
    env = {"DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    runner = CliRunner()

    yolo = runner.invoke(main, ["antlers", "import", str(FIXTURES / "antler_yolo_20260112"), "--format", "yolo"],
                         env=env)

    assert yolo.exit_code == 0, yolo.output
    assert ("3 photos matched, keypoints of 2 buck detections written (9 points), 3 doe/fawn boxes, 0 not imported"
            in yolo.output), yolo.output
    ridge, creek = bucks["Ridge1_20251024_064512_001.jpg"], bucks["Creek2_20251103_181207_001.jpg"]
    assert _counts(engine, ridge) == (9, 4, 3)  # beam + brow, G2, G3 left; beam + brow, G2 right
    assert _counts(engine, creek) == (0, 0, 0)  # a buck box with all points "0 0 0": no antlers annotated
    with engine.connect() as conn:
        logged = dict(conn.execute(sa.text(
            "SELECT detection_id::text, model_version FROM antler_processing_log")).all())
    assert logged == {ridge: "annotation:yolo", creek: "annotation:yolo"}

    ls = runner.invoke(main, ["antlers", "import", str(FIXTURES / "label_studio_export_20260112.json"),
                              "--format", "label-studio"], env=env)

    assert ls.exit_code == 0, ls.output
    assert ("2 photos matched, keypoints of 2 buck detections written (13 points), 2 doe/fawn boxes, 0 not imported"
            in ls.output), ls.output
    # the right tip drawn above the buck's box still belongs to him; the markings are not animals
    assert _counts(engine, ridge) == (9, 4, 3)
    assert _counts(engine, creek) == (4, 0, 3)
