"""Reading and writing the existing system's antler_keypoints table (its 020) and log (its 021)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from deer_reid_assets.core.store import antler_keypoints as ak
from deer_reid_assets_tests.test_matching import add_detection


def test_keypoints_round_trip_replace_and_log(engine):
    points = [ak.Keypoint(i, 10.0 + i, 20.0, visibility=i % 3, confidence=0.5) for i in range(16)]
    with engine.begin() as conn:
        det = add_detection(conn, "mature")
        assert ak.write(conn, det, points, model_version="pose-v1") == 16
    with engine.begin() as conn:
        back = ak.read(conn, [det])[det]
        assert back == points and back[9].name == "right_brow_tine" and back[7].name == "left_royal_tine"
        ak.write(conn, det, [], model_version="pose-v2", notes="no antlers in this crop")
    with engine.connect() as conn:
        assert ak.read(conn, [det]) == {}
        log = conn.execute(sa.text("SELECT antlers_detected, keypoints_count, model_version FROM antler_processing_log "
                                   "WHERE detection_id = :d"), {"d": det}).one()
    assert tuple(log) == (False, 0, "pose-v2")


@pytest.mark.parametrize("bad,message", [
    (ak.Keypoint(16, 1, 1), "index must be 0-15"),
    (ak.Keypoint(3, 1, 1, visibility=3), "visibility must be 0, 1 or 2"),
    (ak.Keypoint(3, 1, 1, confidence=1.5), r"confidence must be in \[0, 1\]"),
    (ak.Keypoint(3, float("nan"), 1), "finite"),
])
def test_bad_keypoints_are_refused_with_a_reason_and_nothing_is_written(engine, bad, message):
    with engine.begin() as conn:
        det = add_detection(conn, "buck")
    with pytest.raises(ValueError, match=message):
        with engine.begin() as conn:
            ak.write(conn, det, [ak.Keypoint(0, 1, 1), bad], model_version="x")
    with engine.connect() as conn:
        assert ak.read(conn) == {}
