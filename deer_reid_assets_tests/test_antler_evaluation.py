"""The antler metrics: point-count accuracy per source with the keypoint error, the constraint inside the
held-out protocol ("+ antler constraint"), and the buck misidentification rate of a report."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core.antlers import layout
from deer_reid_assets.core.antlers.evaluation import point_count_accuracy
from deer_reid_assets.core.antlers.profiles import evaluation_veto
from deer_reid_assets.core.evaluation.report import evaluate
from deer_reid_assets.core.evaluation.splits import EvalSplit
from deer_reid_assets.core.store import antler_keypoints as kp_store

from .test_matching import add_detection

HARD = datetime(2026, 10, 20, tzinfo=UTC)


def _side(points_per_side: int, side: str, x0: float) -> list[layout.Point]:
    """A side with the beam (base, tip) and ``points_per_side - 1`` tines, all seen."""
    parts = ["main_beam", "tip", *("brow_tine", "g2", "g3", "g4")[: points_per_side - 1]]
    return [layout.Point(layout.index(side, p), x0 + 3 * k, 10.0 + k) for k, p in enumerate(parts)]


def _buck(conn, left: int, right: int, *, source: str, truth: tuple[int, int] | None = None,
          true_points: list | None = None, when=HARD) -> str:
    det = add_detection(conn, "buck")
    conn.execute(sa.text("UPDATE detections SET bbox = CAST(:b AS json) WHERE id = :d"),
                 {"b": json.dumps({"x": 0, "y": 0, "width": 30, "height": 40}), "d": det})  # diagonal 50
    conn.execute(sa.text('UPDATE images SET "timestamp" = :t WHERE id = (SELECT image_id FROM detections '
                         'WHERE id = :d)'), {"t": when, "d": det})
    kp_store.write(conn, det, _side(left, "left", 0.0) + _side(right, "right", 40.0) if left else [],
                   model_version=source)
    if truth is not None:
        attributes = {"antler_points_left": truth[0], "antler_points_right": truth[1]}
        if true_points is not None:
            attributes["antler_keypoints"] = true_points
        conn.execute(sa.text("INSERT INTO reid_ground_truth (detection_id, identity, sex, attributes, source) "
                             "VALUES (:d, :i, 'buck', CAST(:a AS jsonb), 'test')"),
                     {"d": det, "i": f"B{left}{right}", "a": json.dumps(attributes)})
    return det


def test_point_counts_are_scored_per_source_and_a_model_miss_counts_as_wrong(engine):
    truth_rows = [[0.0, 0.0, 0] for _ in range(16)]
    for p in _side(4, "left", 0.0) + _side(3, "right", 40.0):
        truth_rows[p.index] = [p.x, p.y, 2]
    truth_rows[layout.index("left", "g2")][0] += 30.0  # the model put its G2 30 px (0.6 of the diagonal) off
    with engine.begin() as conn:
        _buck(conn, 4, 3, source="annotation:label-studio", truth=(4, 3))
        _buck(conn, 4, 3, source="ap-1", truth=(4, 3), true_points=truth_rows)
        _buck(conn, 3, 3, source="ap-1", truth=(4, 3))  # one tine missed on the left
        _buck(conn, 0, 0, source="ap-1", truth=(2, 2))  # the model found no antlers
        _buck(conn, 4, 3, source="ap-1")  # no ground truth: not scored
        accuracy = point_count_accuracy(conn)
    assert accuracy["annotations"] == {"detections": 1, "left_exact": 1.0, "right_exact": 1.0, "total_exact": 1.0}
    model = accuracy["model"]
    assert model["detections"] == 3
    assert model["left_exact"] == pytest.approx(1 / 3) and model["right_exact"] == pytest.approx(2 / 3)
    assert model["total_exact"] == pytest.approx(1 / 3)
    assert model["keypoint_error"] == pytest.approx(0.6 / 9)  # 9 true points, one 0.6 of the diagonal away


def test_the_constraint_in_the_protocol_rules_out_a_buck_of_another_count_in_the_same_season(engine):
    with engine.begin() as conn:
        eight_a = _buck(conn, 4, 4, source="annotation:x")
        ten_a = _buck(conn, 5, 5, source="annotation:x")
        query_same = _buck(conn, 5, 5, source="ap-1")  # ten points, this season
        query_later = _buck(conn, 5, 5, source="ap-1", when=datetime(2027, 10, 20, tzinfo=UTC))  # antlers regrown
        veto = evaluation_veto(conn, tolerance=0)
    out = veto([query_same, query_later, "no-keypoints"], ["Eight", "Ten"], [eight_a, ten_a], ["Eight", "Ten"])
    assert out.tolist() == [[True, False], [False, False], [False, False]]
    assert veto.stats["queries_with_usable_count"] == 2 and veto.stats["pairs_ruled_out"] == 1
    with engine.connect() as conn:
        assert not evaluation_veto(conn, tolerance=2)([query_same], ["Eight"], [eight_a], ["Eight"]).any()
        with pytest.raises(ValueError, match="tolerance must be >= 0"):
            evaluation_veto(conn, tolerance=-1)


def test_report_with_a_veto_takes_the_next_profile_and_counts_buck_misidentification():
    # gallery: Eight (index 0) and Ten (1); queries: 2 (truly Ten, closer to Eight) and 3 (truly Eight)
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0.8, 0.6, 0], [1, 0.05, 0]], dtype=np.float32)
    ids, names, classes = ["g8", "g10", "q10", "q8"], ["Eight", "Ten", "Ten", "Eight"], ["buck"] * 4
    split = EvalSplit(gallery=np.array([0, 1]), val_query=np.array([], dtype=int), test_query=np.array([2, 3]),
                      held_out_identities=())
    plain = evaluate(vectors, ids, names, classes, split, threshold=0.4)
    assert list(plain.per_query["best_name"]) == ["Eight", "Eight"]
    assert plain.buck_misidentification == {"n_bucks_assigned": 2, "n_misidentified": 1, "rate": 0.5}

    def veto(query_ids, profile_names, gallery_ids, gallery_names):
        assert gallery_ids == ["g8", "g10"] and profile_names == ["Eight", "Ten"]
        return np.array([[name == "Eight" and q == "q10" for name in profile_names] for q in query_ids])

    constrained = evaluate(vectors, ids, names, classes, split, threshold=0.4, veto=veto)
    assert list(constrained.per_query["best_name"]) == ["Ten", "Eight"]
    assert constrained.buck_misidentification["rate"] == 0.0
    assert constrained.assignment["false_match_rate"] == 0.0 < plain.assignment["false_match_rate"]
