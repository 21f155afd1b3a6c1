"""Review queue, actions, undo, labelled pairs, dashboard and the app's safety rules, on a real
embedded PostgreSQL (HTTP through Starlette's test client; the browser tests are in test_review_browser)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from deer_reid_assets.core.review import actions, antler_history, dashboard, labels, queue, security
from deer_reid_assets.core.store import antler_keypoints as antler_kp
from deer_reid_assets.core.store import review as store
from deer_reid_assets.core.store import schema as t
from deer_reid_assets.review_app.app import ReviewConfig, create_app
from deer_reid_assets_tests.review_seed import review_fields, seed


@pytest.fixture
def scene(engine, tmp_path):
    return seed(engine, tmp_path / "store"), tmp_path / "store"


def test_queue_order_uncertain_then_new_then_audit(engine, scene):
    ids, _ = scene
    with engine.connect() as conn:
        items = queue.order_queue(store.pending_detections(conn))
    assert [i.reason for i in items] == ["uncertain", "new_animal", "audit", "audit"]
    assert items[0].detection_id == ids["uncertain"] and items[0].proposed_deer_id == ids["A"]
    assert items[0].margin == pytest.approx(0.02)
    assert items[1].detection_id == ids["new"] and items[1].proposed_deer_id == ids["A"]
    assert {items[2].detection_id, items[3].detection_id} == {ids["audit1"], ids["audit2"]}


def test_skip_sends_an_item_to_the_end_without_reviewing_it(engine, scene):
    ids, _ = scene
    actions.apply_action(engine, ids["uncertain"], "skip", reviewer="ann", proposed_deer_id=ids["A"])
    with engine.connect() as conn:
        items = queue.order_queue(store.pending_detections(conn))
    assert items[-1].detection_id == ids["uncertain"] and items[-1].skipped
    assert review_fields(engine, ids["uncertain"])["is_reviewed"] is False


def test_actions_write_review_fields_and_corrections_and_undo_restores(engine, scene):
    ids, _ = scene
    actions.apply_action(engine, ids["audit1"], "confirm", reviewer="ann", proposed_deer_id=ids["A"],
                         queue_reason="audit")
    assert review_fields(engine, ids["audit1"]) == {"deer_id": ids["A"], "is_reviewed": True, "is_valid": True,
                                                   "reviewed_by": "ann", "correction_notes": None}
    actions.apply_action(engine, ids["audit2"], "reassign", reviewer="ann", deer_id=ids["C"],
                         proposed_deer_id=ids["B"], queue_reason="audit")
    assert review_fields(engine, ids["audit2"])["deer_id"] == ids["C"]
    actions.apply_action(engine, ids["new"], "new_deer", reviewer="ann", proposed_deer_id=ids["A"],
                         new_deer_name="Split Ear")
    new_deer = review_fields(engine, ids["new"])["deer_id"]
    assert new_deer not in (ids["A"], ids["B"], ids["C"])
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name, sex::text FROM deer WHERE id::text = :d"), {"d": new_deer}).one() \
            == ("Split Ear", "buck")
        c = store.corrections(conn, ids["audit2"])[0]
        assert (c["action"], c["reviewer"], c["before"]["deer_id"], c["after"]["deer_id"]) == \
            ("reassign", "ann", ids["B"], ids["C"])
        pairs = set(labels.review_pairs(conn))
        d = dashboard.compute(conn)
    assert labels.ReviewPair(ids["audit2"], ids["B"], False, "reassign") in pairs  # the hard negative
    assert labels.ReviewPair(ids["audit2"], ids["C"], True, "reassign") in pairs
    assert labels.ReviewPair(ids["audit1"], ids["A"], True, "confirm") in pairs
    assert labels.ReviewPair(ids["new"], ids["A"], False, "new_deer") in pairs
    assert (d.audited, d.audited_wrong, d.false_match_rate) == (2, 1, 0.5)
    assert d.backlog == 1 and sum(n for _, n in d.corrections_per_week) == 3

    # undo the new deer: the detection is back as it was, the created deer is gone
    assert actions.undo_last(engine, "ann")["action"] == "new_deer"
    assert review_fields(engine, ids["new"]) == {"deer_id": None, "is_reviewed": False, "is_valid": True,
                                                 "reviewed_by": None, "correction_notes": None}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM deer WHERE id::text = :d"), {"d": new_deer}).scalar() == 0
    # another person cannot undo ann's actions; a changed detection is not silently overwritten
    assert actions.undo_last(engine, "bob") is None
    actions.apply_action(engine, ids["audit2"], "reassign", reviewer="bob", deer_id=ids["A"], proposed_deer_id=ids["C"])
    with pytest.raises(actions.ReviewError, match="changed since"):
        actions.undo_last(engine, "ann")
    assert review_fields(engine, ids["audit2"])["deer_id"] == ids["A"]


def test_not_a_deer_marks_invalid_and_bad_input_is_one_clear_error(engine, scene):
    ids, _ = scene
    actions.apply_action(engine, ids["new"], "not_deer", reviewer="ann", proposed_deer_id=ids["A"])
    f = review_fields(engine, ids["new"])
    assert (f["is_valid"], f["is_reviewed"], f["deer_id"]) == (False, True, None) and "not a deer" in f["correction_notes"]
    with pytest.raises(actions.ReviewError, match="unknown action"):
        actions.apply_action(engine, ids["audit1"], "delete", reviewer="ann")
    with pytest.raises(actions.ReviewError, match="no deer"):
        actions.apply_action(engine, ids["audit1"], "reassign", reviewer="ann", deer_id=ids["audit1"])
    with pytest.raises(actions.ReviewError, match="no detection"):
        actions.apply_action(engine, ids["A"], "skip", reviewer="ann")
    with engine.connect() as conn:  # the refused ones wrote nothing
        assert [c["action"] for c in store.corrections(conn)] == ["not_deer"]


def test_safety_rules(tmp_path):
    assert security.required_token("127.0.0.1", None) is None
    with pytest.raises(security.UnsafeConfig, match="needs --token"):
        security.required_token("0.0.0.0", None)
    with pytest.raises(security.UnsafeConfig, match="at least 16"):
        security.required_token("0.0.0.0", "short")
    assert security.valid_id("../../etc/passwd") is None
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"x")
    assert security.crop_inside(tmp_path / "store", str(outside)) is None


def _csrf(client: TestClient, path: str = "/queue") -> str:
    page = client.get(path)
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_http_review_flow_csrf_and_crops(engine, scene):
    ids, store_root = scene
    client = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root, reviewer="web")))
    csrf = _csrf(client)
    assert ids["uncertain"] in client.get("/queue").text
    # a form without the CSRF value (as a cross-site page would send) is refused and changes nothing
    refused = client.post(f"/review/{ids['uncertain']}", data={"action": "confirm", "proposed_deer_id": ids["A"]})
    assert refused.status_code == 403 and review_fields(engine, ids["uncertain"])["is_reviewed"] is False
    done = client.post(f"/review/{ids['uncertain']}", data={"csrf": csrf, "action": "confirm",
                                                          "proposed_deer_id": ids["A"], "queue_reason": "uncertain"})
    assert done.status_code == 200 and "confirm saved" in done.text, re.search(r"class=\"msg\"[^<]*<|<p[^<]*", done.text)
    assert review_fields(engine, ids["uncertain"])["reviewed_by"] == "web"
    assert client.get(f"/crop/{ids['A']}.jpg").status_code == 404          # a deer id is not a detection
    assert client.get("/crop/..%2F..%2Fetc%2Fpasswd.jpg").status_code == 404
    img = client.get(f"/crop/{ids['uncertain']}.jpg")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert 'id="no-evaluations"' in client.get("/dashboard").text
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO reid_evaluations (name, versions, summary, report) VALUES ('reid_evaluation', "
            "'{\"resnet50\": \"r-1\"}', '{\"rank1\": 0.1234, \"mAP\": 0.05, \"assignment_rate\": 0.5, "
            "\"false_match_rate\": 0.9385474860335196}', '{}')"))
    page = client.get("/dashboard").text
    assert 'id="backlog">3<' in page and "<svg" in page
    assert "<td>12.3%</td>" in page and "<td>93.9%</td>" in page and "resnet50=r-1" in page
    deer = client.get(f"/deer/{ids['A']}").text
    assert deer.count('src="/crop/') == 4 and "<td>cam01</td><td>4</td>" in deer.replace("\n", "")
    assert client.get(f"/deer/{ids['uncertain']}").status_code == 404


def test_http_token_required_when_set(engine, scene):
    _, store_root = scene
    token = "t" * 24
    client = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root, token=token)))
    assert client.get("/queue").status_code == 401
    assert client.get("/queue", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get(f"/queue?token={token}").status_code == 200  # sets the cookie, then redirects
    assert client.get("/dashboard").status_code == 200


def test_before_cutover_the_queue_shows_the_pipelines_proposals(engine, scene):
    ids, store_root = scene
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE reid_live_matching SET owner = 'existing_system'"))
        conn.execute(sa.text("INSERT INTO reid_assignment_runs (run_id, method, versions, threshold, n_considered, "
                             "n_assigned) VALUES ('r1', 'test', '{}', 0.4, 1, 1)"))
        conn.execute(sa.text(
            "INSERT INTO reid_match_proposals (run_id, detection_id, current_deer_id, proposed_deer_id, similarity, "
            "candidates) VALUES ('r1', CAST(:d AS uuid), CAST(:b AS uuid), CAST(:c AS uuid), 0.9, CAST(:j AS jsonb))"),
            {"d": ids["audit2"], "b": ids["B"], "c": ids["C"],
             "j": f'[{{"deer_id": "{ids["C"]}", "similarity": 0.9}}, {{"deer_id": "{ids["B"]}", "similarity": 0.3}}]'})
    with engine.connect() as conn:
        (item,) = queue.pending(conn)  # only what the pipeline proposed; the worker's scores are not read
    assert (item.detection_id, item.proposed_deer_id, item.current_deer_id) == (ids["audit2"], ids["C"], ids["B"])
    assert item.reason == "audit" and [c["deer_id"] for c in item.candidates] == [ids["C"], ids["B"]]
    page = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root))).get("/queue").text
    assert f'src="/crop/{ids["audit2"]}.jpg"' in page and "the existing\n   system has it as" in page


def _keypoints(conn, det: str, indices: list[int], source: str) -> None:
    pts = [antler_kp.Keypoint(i, 10.0 + i, 20.0, 2, 1.0) for i in indices]
    antler_kp.write(conn, det, pts, model_version=source)


def test_deer_page_antler_history_per_season(engine, scene):
    ids, store_root = scene
    beams_and_two_tines = [0, 1, 2, 5, 8, 9, 10, 13]  # beam base, brow, G2, tip on each side: a typical 6-point
    with engine.begin() as conn:
        own = [r[0] for r in conn.execute(sa.text(
            "SELECT id::text FROM detections WHERE deer_id::text = :a ORDER BY id"), {"a": ids["A"]})]
        _keypoints(conn, own[0], beams_and_two_tines, "annotation:review-app")  # October 2026: hard, 2026-27
        _keypoints(conn, own[1], [0, 1, 8], "yolo-pose:test")                   # same season, a side partly unseen
        img = conn.execute(sa.insert(t.images).values(filename="v.jpg", path="/p/v.jpg",
                                                      timestamp=datetime(2025, 6, 10, 7, tzinfo=UTC))
                           .returning(t.images.c.id)).scalar_one()
        velvet = conn.execute(sa.insert(t.detections).values(
            image_id=img, deer_id=ids["A"], bbox={"x": 0, "y": 0, "width": 64, "height": 64}, confidence=0.9,
            classification="buck").returning(t.detections.c.id)).scalar_one()
        _keypoints(conn, velvet, [0, 1, 5, 8, 13], "yolo-pose:test")             # June 2025: velvet, 2025-26
    with engine.connect() as conn:
        rows = antler_history.deer_history(conn, ids["A"])
        assert antler_history.deer_history(conn, ids["C"]) == []
    assert [r.season for r in rows] == ["2026-27", "2025-26"]
    new, old = rows
    assert (new.left_points, new.right_points, new.total_points, new.typical, new.settled) == (3, 3, 6, "typical", True)
    assert (new.detections, new.by_people, new.by_model, new.phases) == (2, 1, 1, "hard")
    assert new.description.startswith("6-point typical (3L/3R)")
    assert (old.total_points, old.settled, old.by_people, old.by_model, old.phases) == (3, False, 0, 1, "velvet")
    client = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root)))
    page = re.sub(r">\s+<", "><", client.get(f"/deer/{ids['A']}").text)
    assert 'id="antler-history"' in page and "<td>2026-27</td><td>hard</td><td>3</td><td>3</td><td>6</td>" in page
    assert "<td>3+</td>" in page and 'id="no-antlers"' in client.get(f"/deer/{ids['C']}").text


def test_dashboard_buck_misidentification_live_and_per_run(engine, scene):
    ids, store_root = scene
    with engine.begin() as conn:
        for det, who in (("uncertain", "B"), ("audit2", "B")):  # the matcher has A (wrong) and B (right)
            conn.execute(sa.text("INSERT INTO reid_ground_truth (detection_id, identity, sex, attributes, source) "
                                 "VALUES (CAST(:d AS uuid), :n, 'buck', '{}', 'test')"), {"d": ids[det], "n": who})
        conn.execute(sa.text(
            "INSERT INTO reid_evaluations (name, versions, summary, report) VALUES "
            "('reid_evaluation', '{\"resnet50\": \"r-1\"}', '{\"rank1\": 0.5}', '{}'), "
            "('reid_evaluation', '{\"resnet50\": \"r-2\"}', '{\"rank1\": 0.6}', "
            "'{\"test\": {\"buck_misidentification\": {\"rate\": 0.125}}, "
            "\"live_assignments\": {\"buck_misidentification_rate\": 0.375}}')"))
    # a person says the matcher's buck A is buck B (wrong buck); a new-animal candidate had no deer (not counted)
    actions.apply_action(engine, ids["audit1"], "reassign", reviewer="ann", deer_id=ids["B"],
                         proposed_deer_id=ids["A"], queue_reason="audit")
    actions.apply_action(engine, ids["new"], "new_deer", reviewer="ann", proposed_deer_id=ids["A"])
    with engine.connect() as conn:
        d = dashboard.compute(conn)
    assert (d.bucks_assigned, d.bucks_misidentified) == (3, 2) and d.buck_misid_rate == pytest.approx(2 / 3)
    assert [(e["buck_misid_rate"], e["live_buck_misid_rate"]) for e in d.evaluations] == [(None, None), (0.125, 0.375)]
    page = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root))).get("/dashboard").text
    assert 'id="buck-misid-rate">66.7%<' in page and "2 of 3 bucks assigned" in page
    assert "<td>12.5%</td><td>37.5%</td>" in re.sub(r">\s+<", "><", page) and 'id="buck-misid-chart"' in page
    actions.undo_last(engine, "ann")  # the new deer
    actions.undo_last(engine, "ann")  # the reassignment: back to the matcher's (unreviewed, no truth) A
    with engine.connect() as conn:
        assert dashboard.compute(conn).bucks_assigned == 2
