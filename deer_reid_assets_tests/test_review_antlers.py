"""The review app's antler page: stored (predicted) keypoints shown in crop pixels with their counts,
a person's points saved to antler_keypoints in photo pixels, accept, bad input refused."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from deer_reid_assets.core.antlers.layout import Point, index
from deer_reid_assets.core.review import antler_annotation as ann
from deer_reid_assets.core.review.actions import ReviewError
from deer_reid_assets.core.store import antler_keypoints as kp_store
from deer_reid_assets.review_app.app import ReviewConfig, create_app
from deer_reid_assets_tests.review_seed import seed


@pytest.fixture
def scene(engine, tmp_path):
    ids = seed(engine, tmp_path / "store")
    with engine.begin() as conn:  # the audit1 crop came from a box at (10, 20) of its photo
        conn.execute(sa.text("UPDATE detections SET bbox = '{\"x\": 10, \"y\": 20, \"width\": 64, \"height\": 64}' "
                             "WHERE id = CAST(:d AS uuid)"), {"d": ids["audit1"]})
        kp_store.write(conn, ids["audit1"], [Point(index("left", "main_beam"), 15, 70, 2, 0.9),
                                             Point(index("left", "brow_tine"), 20, 50, 2, 0.8),
                                             Point(index("right", "main_beam"), 60, 70, 1, 0.7)],
                       model_version="antler-yolo-test")
    return ids, tmp_path / "store"


def _stored(engine, det):
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT keypoint_index, x, y, visibility, confidence FROM antler_keypoints "
                                    "WHERE detection_id = CAST(:d AS uuid) ORDER BY 1"), {"d": det}).all()
        source = conn.execute(sa.text("SELECT model_version FROM antler_processing_log WHERE detection_id = "
                                      "CAST(:d AS uuid)"), {"d": det}).scalar()
    return [tuple(r) for r in rows], source


def test_the_page_shows_stored_points_in_crop_pixels_and_saves_in_photo_pixels(engine, scene):
    ids, _ = scene
    with engine.connect() as conn:
        page = ann.page(conn, ids["audit1"])
        todo = [i["detection_id"] for i in ann.worklist(conn)]
    assert (page.width, page.height, page.source) == (64, 64, "antler-yolo-test")
    assert [(p["index"], p["x"], p["y"]) for p in page.points] == [(0, 5, 50), (1, 10, 30), (8, 50, 50)]
    assert (page.left, page.right) == (2, 1) and "2+L/1+R" in page.counts
    assert todo[0] == ids["audit1"]  # predicted, not yet checked by a person: first
    points = [{"index": 0, "x": 4, "y": 50, "visibility": 2}, {"index": 2, "x": 12.5, "y": 20, "visibility": 1},
              {"index": 13, "x": 40, "y": 10, "visibility": 2}]
    saved = ann.save(engine, ids["audit1"], json.dumps(points), reviewer="ann")
    rows, source = _stored(engine, ids["audit1"])
    assert rows == [(0, 14.0, 70.0, 2, 1.0), (2, 22.5, 40.0, 1, 1.0), (13, 50.0, 30.0, 2, 1.0)]
    assert source == ann.SOURCE and (saved.left, saved.right) == (2, 1)
    with engine.connect() as conn:
        assert [i["detection_id"] for i in ann.worklist(conn)][-1] == ids["audit1"]  # annotated: last


def test_accept_keeps_the_predicted_points_as_a_persons(engine, scene):
    ids, _ = scene
    ann.accept(engine, ids["audit1"], reviewer="ann")
    rows, source = _stored(engine, ids["audit1"])
    assert [(i, x, y, v) for i, x, y, v, _ in rows] == [(0, 15, 70, 2), (1, 20, 50, 2), (8, 60, 70, 1)]
    assert source == ann.SOURCE and {c for *_, c in rows} == {1.0}
    with pytest.raises(ReviewError, match="no stored keypoints to accept"):
        ann.accept(engine, ids["audit2"], reviewer="ann")


@pytest.mark.parametrize("raw, message", [
    ("not json", "not valid JSON"),
    ('[{"index": 0, "x": 70, "y": 1, "visibility": 2}]', "outside the 64x64 crop"),
    ('[{"index": 0, "x": 1, "y": 1}, {"index": 0, "x": 2, "y": 2}]', "given once"),
    ('[{"index": 16, "x": 1, "y": 1}]', "index must be 0-15"),
    ('[{"index": 3, "x": 1, "y": 1, "visibility": 0}]', "visibility must be 1"),
    ('[{"index": 3, "x": "NaN", "y": 1}]', "outside"),
    ('[{"x": 1}]', "needs index"),
])
def test_bad_points_are_one_line_errors_that_change_nothing(engine, scene, raw, message):
    ids, _ = scene
    before = _stored(engine, ids["audit1"])
    with pytest.raises(ReviewError, match=message):
        ann.save(engine, ids["audit1"], raw, reviewer="ann")
    assert _stored(engine, ids["audit1"]) == before


def test_antler_pages_over_http(engine, scene):
    ids, store_root = scene
    client = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root, reviewer="web")))
    assert ids["audit1"] in client.get("/antlers").text
    page = client.get(f"/antlers/{ids['audit1']}")
    assert page.status_code == 200 and "antler-yolo-test" in page.text and "left_royal_tine" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    points = '[{"index": 5, "x": 30, "y": 3, "visibility": 2}]'
    assert client.post(f"/antlers/{ids['audit1']}", data={"action": "save", "points": points}).status_code == 403
    done = client.post(f"/antlers/{ids['audit1']}", data={"csrf": csrf, "action": "save", "points": points})
    assert "saved 1 keypoints" in done.text and _stored(engine, ids["audit1"])[0] == [(5, 40.0, 23.0, 2, 1.0)]
    bad = client.post(f"/antlers/{ids['audit1']}", data={"csrf": csrf, "action": "save", "points": "[1]"})
    assert "needs index" in bad.text
    assert client.get(f"/antlers/{ids['A']}").status_code == 404
