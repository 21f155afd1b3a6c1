"""Antler annotations to and from the antler_keypoints table, the deer table's antler columns and the
season-aware constraint inside the matcher, against real PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core import matching
from deer_reid_assets.core.antlers import labelstudio, layout, yolo
from deer_reid_assets.core.antlers.annotations import AnnotatedImage, Annotation, RelPoint
from deer_reid_assets.core.antlers.profiles import write_deer_columns
from deer_reid_assets.core.antlers.transfer import export_annotations, import_annotations
from deer_reid_assets.core.store import antler_keypoints as kp_store

from .test_matching import VERSION, add_deer, add_detection, add_version, e, vec


def _photo(conn, tmp_path, det: str, name: str, size=(200, 100), bbox=None, when=None) -> None:
    path = tmp_path / "photos" / name
    path.parent.mkdir(exist_ok=True)
    Image.new("RGB", size, (90, 80, 60)).save(path)
    image_id = conn.execute(sa.text("SELECT image_id FROM detections WHERE id = :d"), {"d": det}).scalar_one()
    conn.execute(sa.text("UPDATE images SET filename = :f, path = :p WHERE id = :i"),
                 {"f": name, "p": str(path), "i": image_id})
    if when is not None:
        conn.execute(sa.text('UPDATE images SET "timestamp" = :t WHERE id = :i'), {"t": when, "i": image_id})
    if bbox is not None:
        conn.execute(sa.text("UPDATE detections SET bbox = CAST(:b AS json) WHERE id = :d"),
                     {"b": json.dumps(bbox), "d": det})


BUCK_BOX = {"x": 50, "y": 20, "width": 100, "height": 60}  # in a 200 x 100 photo: centre (0.5, 0.5), 0.5 x 0.6
POINTS = [RelPoint(0, 0.45, 0.4), RelPoint(1, 0.43, 0.35, 1), RelPoint(5, 0.40, 0.25), RelPoint(8, 0.55, 0.4),
          RelPoint(13, 0.60, 0.25)]


def test_import_both_formats_into_the_table_and_export_round_trip(engine, tmp_path):
    with engine.begin() as conn:
        buck = add_detection(conn, "buck")
        doe = add_detection(conn, "doe")
        other = add_detection(conn, "buck")
        _photo(conn, tmp_path, buck, "Jason1_20251010_021121_001.JPG", bbox=BUCK_BOX)
        _photo(conn, tmp_path, doe, "SANCTUARY_11106.JPG")
        _photo(conn, tmp_path, other, "far_away.JPG", bbox={"x": 0, "y": 0, "width": 20, "height": 20})
    items = [
        (AnnotatedImage("03f83b7f-88b35fca_Jason1_20251010_021121_001", [Annotation("buck", (0.5, 0.5, 0.5, 0.6),
                                                                                   POINTS)], split="train"), None),
        (AnnotatedImage("2491db4f_SANCTUARY_11106", [Annotation("doe", (0.1, 0.1, 0.2, 0.2))], split="val"), None),
        (AnnotatedImage("not_stored", [Annotation("doe", (0.1, 0.1, 0.2, 0.2))], split="val"), None),
        (AnnotatedImage("far_away", [Annotation("buck", (0.7, 0.7, 0.2, 0.2), POINTS[:1])], split="val"), None),
    ]
    data = yolo.write_dataset(tmp_path / "in", items)

    report = import_annotations(engine, data, "yolo")

    assert (report.photos_matched, report.detections_written, report.boxes_without_keypoints) == (3, 1, 1)
    assert sorted(report.errors) == ["far_away: buck 1 matches no detection (best IoU 0.00)",
                                     "not_stored: no stored photo with this name"]
    with engine.connect() as conn:
        stored = kp_store.read(conn)
        source = conn.execute(sa.text("SELECT model_version FROM antler_processing_log")).scalar_one()
    assert source == "annotation:yolo" and list(stored) == [buck]
    got = [(p.index, round(p.x, 6), round(p.y, 6), p.visibility, p.confidence) for p in stored[buck]]
    assert got == [(0, 90.0, 40.0, 2, 1.0), (1, 86.0, 35.0, 1, 1.0), (5, 80.0, 25.0, 2, 1.0), (8, 110.0, 40.0, 2, 1.0),
                   (13, 120.0, 25.0, 2, 1.0)]

    out, n = export_annotations(engine, tmp_path / "out", "yolo")
    assert n == 1
    (img,) = yolo.read_dataset(out)[0]
    assert img.key == "Jason1_20251010_021121_001.JPG"
    assert (tmp_path / "out" / "images" / img.split / "Jason1_20251010_021121_001.JPG").is_file()
    assert [(p.index, round(p.x, 6), round(p.y, 6), p.visibility) for p in img.annotations[0].points] == [
        (p.index, p.x, p.y, p.visibility) for p in POINTS]

    tasks, n = export_annotations(engine, tmp_path / "ls", "label-studio")
    assert (tmp_path / "ls" / "labeling_config.xml").read_text() == labelstudio.labeling_config()
    with engine.begin() as conn:
        kp_store.write(conn, buck, [], model_version="test")
    again = import_annotations(engine, tasks, "label-studio")
    assert (again.detections_written, again.errors) == (1, [])
    with engine.connect() as conn:
        back = kp_store.read(conn)[buck]
    # Label Studio has no 'occluded': every annotated point comes back visible
    assert [(p.index, round(p.x, 6), round(p.y, 6)) for p in back] == [(i, x, y) for i, x, y, *_ in got]


def _eight(points_per_side: int = 4) -> list[kp_store.Keypoint]:
    """A buck whose both beams (base and tip) are seen, with points_per_side - 1 tines per side."""
    tines = ("brow_tine", "g2", "g3", "g4", "bez_tine")[: points_per_side - 1]
    out = []
    for side, sign in (("left", -1), ("right", 1)):
        for k, part in enumerate(("main_beam", "tip") + tines):
            out.append(kp_store.Keypoint(layout.index(side, part), 100 + sign * (10 + 5 * k), 50 - 5 * k, 2, 0.9))
    return out


def test_the_constraint_changes_a_decision_only_within_one_hard_antler_season(engine):
    hard = datetime(2026, 10, 15, tzinfo=UTC)
    with engine.begin() as conn:
        add_version(conn)
        a = add_deer(conn, "Eight", "buck")
        b = add_deer(conn, "Ten", "buck")
        for deer, n, axis in ((a, 4, 0), (b, 5, 1)):
            det = add_detection(conn, "buck", e(axis), deer_id=deer, reviewed=True)
            kp_store.write(conn, det, _eight(n), model_version="annotation:test")
        # looks like Eight (0.75) more than Ten (0.5) but carries ten points
        query = add_detection(conn, "buck", vec((0.75, 0), (0.5, 1), (0.25, list(range(2, 7))),
                                                (0.0, 7)) / np.float32(1.0))
        kp_store.write(conn, query, _eight(5), model_version="model")
        conn.execute(sa.text('UPDATE images SET "timestamp" = :t'), {"t": hard})
    matching.build_profiles(engine, VERSION, "resnet50")

    off = matching.assign_detections(engine, VERSION, threshold=0.3, antler_tolerance=None)
    assert _deer(engine, query) == a and off.antler_vetoes == 0
    on = matching.assign_detections(engine, VERSION, threshold=0.3)
    assert _deer(engine, query) == b and on.antler_vetoes == 1
    with engine.connect() as conn:
        config = conn.execute(sa.text("SELECT config FROM reid_assignment_runs WHERE run_id = :r"),
                              {"r": on.run_id}).scalar_one()
    (change,) = config["antler_constraint"]["changed"]
    assert change["detection_id"] == query and change["skipped_deer_id"] == a
    assert "10 vs 8 points" in change["reason"] and "2026-27" in change["reason"]
    assert matching.assign_detections(engine, VERSION, threshold=0.3, antler_tolerance=2).antler_vetoes == 0
    assert _deer(engine, query) == a
    with engine.begin() as conn:  # the query photo one year later: antlers regrown, no constraint
        conn.execute(sa.text('UPDATE images SET "timestamp" = :t WHERE id = (SELECT image_id FROM detections '
                             'WHERE id = :d)'), {"t": datetime(2027, 10, 15, tzinfo=UTC), "d": query})
    assert matching.assign_detections(engine, VERSION, threshold=0.3).antler_vetoes == 0
    assert _deer(engine, query) == a

    from deer_reid_assets.core.antlers.evaluation import point_count_accuracy
    from deer_reid_assets.core.evaluation.protocol import live_assignment_stats

    with engine.begin() as conn:  # hidden truth: the query is Ten (5 + 5 points), the matcher said Eight
        conn.execute(sa.text(
            """INSERT INTO reid_ground_truth (detection_id, identity, sex, antler_points, attributes, source)
               VALUES (:d, 'Ten', 'buck', 10, CAST(:a AS jsonb), 'test')"""),
            {"d": query, "a": json.dumps({"antler_points_left": 5, "antler_points_right": 4})})
        conn.execute(sa.text("INSERT INTO reid_crops (detection_id, status, path, crop_version) "
                             "VALUES (:d, 'ok', '/crops/q.jpg', 'test')"), {"d": query})
        accuracy = point_count_accuracy(conn)
        live = live_assignment_stats(conn)
    assert accuracy["model"] == {"detections": 1, "left_exact": 1.0, "right_exact": 0.0, "total_exact": 0.0,
                                 "keypoint_error": None}  # the truth has counts here, no keypoints
    assert accuracy["annotations"]["detections"] == 0 and accuracy["annotations"]["left_exact"] is None
    assert (live["bucks_assigned"], live["bucks_misidentified"], live["buck_misidentification_rate"]) == (1, 1, 1.0)

    summary = write_deer_columns(engine)
    assert summary["buck_detections"] == 3 and summary["deer_profiles"] == 2
    with engine.connect() as conn:
        rows = {r[0]: r[1:] for r in conn.execute(sa.text(
            "SELECT id::text, antler_points, antler_description, physical_features FROM deer"))}
    assert rows[a][0] == 8 and rows[a][1].startswith("8-point typical (4L/4R)") and "2026-27" in rows[a][1]
    assert rows[b][0] == 10 and rows[b][2]["antlers"]["2026-27"]["total_points"] == 10


def _deer(engine, det):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT deer_id::text FROM detections WHERE id = :d"), {"d": det}).scalar_one()
