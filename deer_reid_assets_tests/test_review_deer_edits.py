"""Merging and splitting deer from the deer pages: one transaction each, recorded as corrections,
undone as a whole, refused with a clear line on bad input, and the profiles rebuilt by a sensor."""

from __future__ import annotations

import re

import dagster as dg
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from deer_reid_assets.core.review import actions, deer_edits, labels
from deer_reid_assets.core.store import review as store
from deer_reid_assets.defs.resources import DatabaseResource
from deer_reid_assets.review_app.app import ReviewConfig, create_app
from deer_reid_assets_tests.review_seed import seed


@pytest.fixture
def scene(engine, tmp_path):
    return seed(engine, tmp_path / "store"), tmp_path / "store"


def _deer_of(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections")).all())


def _deer(engine, deer_id: str) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT name, notes, sighting_count FROM deer WHERE id::text = :d"),
                                 {"d": deer_id}).mappings().one())


def test_merge_moves_every_detection_in_one_operation_and_undo_puts_them_back(engine, scene):
    ids, _ = scene
    before = _deer_of(engine)
    b_dets = sorted(d for d, deer in before.items() if deer == ids["B"])
    done = deer_edits.merge_deer(engine, ids["A"], ids["B"], reviewer="ann")
    assert done["moved"] == len(b_dets) == 3
    after = _deer_of(engine)
    assert all(after[d] == ids["A"] for d in b_dets) and ids["B"] not in after.values()
    assert {d: v for d, v in after.items() if d not in b_dets} == {d: v for d, v in before.items() if d not in b_dets}
    assert _deer(engine, ids["B"])["notes"].startswith("merged into A") and _deer(engine, ids["B"])["sighting_count"] == 0
    assert _deer(engine, ids["A"])["sighting_count"] == 7
    with engine.connect() as conn:
        rows = [c for c in store.corrections(conn) if c["queue_reason"] == "merge"]
        assert {r["action"] for r in rows} == {"reassign"} and len({r["operation_id"] for r in rows}) == 1
        assert sorted(r["detection_id"] for r in rows) == b_dets
        assert not [p for p in labels.review_pairs(conn) if not p.positive]  # a merge says no deer was wrong
    # one undo restores all of it (and is refused once a moved detection was changed since)
    actions.apply_action(engine, b_dets[0], "not_deer", reviewer="bob")
    with pytest.raises(actions.ReviewError, match="changed since that merge"):
        actions.undo_last(engine, "ann")
    actions.undo_last(engine, "bob")
    undone = actions.undo_last(engine, "ann")
    assert undone["queue_reason"] == "merge" and undone["detections"] == 3
    assert _deer_of(engine) == before and _deer(engine, ids["B"])["notes"] is None
    assert _deer(engine, ids["B"])["sighting_count"] == 3


def test_split_makes_a_new_deer_of_the_chosen_detections_with_hard_negatives(engine, scene):
    ids, _ = scene
    a_dets = sorted(d for d, deer in _deer_of(engine).items() if deer == ids["A"])
    chosen = a_dets[:2]
    done = deer_edits.split_deer(engine, ids["A"], chosen, reviewer="ann", new_name="Left Notch")
    after = _deer_of(engine)
    assert done["moved"] == 2 and all(after[d] == done["deer_id"] for d in chosen)
    assert all(after[d] == ids["A"] for d in a_dets[2:])
    assert _deer(engine, done["deer_id"])["name"] == "Left Notch"
    with engine.connect() as conn:
        fields = store.detection_state(conn, chosen[0])
        negatives = {(p.detection_id, p.deer_id) for p in labels.review_pairs(conn) if not p.positive}
        confused = labels.confusers(conn)
    assert fields["is_reviewed"] and fields["reviewed_by"] == "ann"
    assert negatives == {(d, ids["A"]) for d in chosen} and confused == {"A": ["Left Notch"], "Left Notch": ["A"]}
    undone = actions.undo_last(engine, "ann")
    assert undone["queue_reason"] == "split" and all(_deer_of(engine)[d] == ids["A"] for d in a_dets)
    with engine.connect() as conn:
        assert not store.deer_exists(conn, done["deer_id"])


def test_bad_merges_and_splits_are_one_line_errors_that_change_nothing(engine, scene):
    ids, _ = scene
    before = _deer_of(engine)
    a_dets = sorted(d for d, deer in before.items() if deer == ids["A"])
    cases = [
        (lambda: deer_edits.merge_deer(engine, ids["A"], ids["A"], reviewer="ann"), "two different deer"),
        (lambda: deer_edits.merge_deer(engine, ids["A"], ids["uncertain"], reviewer="ann"), "no deer"),
        (lambda: deer_edits.split_deer(engine, ids["A"], [], reviewer="ann"), "choose the detections"),
        (lambda: deer_edits.split_deer(engine, ids["A"], a_dets, reviewer="ann"), "at least one detection"),
        (lambda: deer_edits.split_deer(engine, ids["A"], [ids["audit2"]], reviewer="ann"), "is not one of A's"),
        (lambda: deer_edits.merge_deer(engine, ids["A"], ids["B"], reviewer=" "), "reviewer name"),
    ]
    for call, message in cases:
        with pytest.raises(actions.ReviewError, match=message):
            call()
    assert _deer_of(engine) == before
    with engine.connect() as conn:
        assert store.corrections(conn) == []


def test_merge_and_split_over_http_need_the_csrf_value(engine, scene):
    ids, store_root = scene
    client = TestClient(create_app(ReviewConfig(engine=engine, store_root=store_root, reviewer="web")))
    page = client.get(f"/deer/{ids['B']}")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    assert client.post(f"/deer/{ids['B']}/merge", data={"into": ids["C"]}).status_code == 403
    assert ids["B"] in _deer_of(engine).values()
    merged = client.post(f"/deer/{ids['B']}/merge", data={"csrf": csrf, "into": ids["C"]})
    assert merged.status_code == 200 and "merged: 3 detections moved here" in merged.text
    assert merged.url.path == f"/deer/{ids['C']}" and ids["B"] not in _deer_of(engine).values()
    back = client.post("/undo", data={"csrf": csrf, "back": "https://elsewhere.example/x"})
    assert back.url.path == "/queue" and "undid merge (3 detections back)" in back.text
    c_dets = sorted(d for d, deer in _deer_of(engine).items() if deer == ids["C"])
    split = client.post(f"/deer/{ids['C']}/split", data={"csrf": csrf, "detection_id": c_dets[:1], "new_name": "Kid"})
    assert "split: 1 detections moved" in split.text and "Kid (doe)" in split.text
    bad = client.post(f"/deer/{ids['C']}/split", data={"csrf": csrf, "detection_id": ["../../etc"]})
    assert "not a detection id" in bad.text


def test_a_merge_or_split_and_its_undo_make_the_profiles_sensor_rebuild(engine, scene):
    from deer_reid_assets.definitions import defs
    from deer_reid_assets.defs.review import profiles_after_deer_edits_sensor

    ids, _ = scene
    sensor = defs.resolve_sensor_def("profiles_after_deer_edits_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def("rebuild_profiles")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"deer_profiles", "deer_assignments"}
    database = DatabaseResource(url=engine.url.render_as_string(hide_password=False))

    def tick(cursor):
        with dg.build_sensor_context(resources={"database": database}, cursor=cursor) as ctx:
            return profiles_after_deer_edits_sensor(ctx)

    quiet = tick(None)
    assert not quiet.run_requests and "no merge or split" in quiet.skip_reason.skip_message
    actions.apply_action(engine, ids["audit1"], "confirm", reviewer="ann", proposed_deer_id=ids["A"])
    assert not tick(quiet.cursor).run_requests  # queue decisions go through matching, not this sensor
    deer_edits.merge_deer(engine, ids["A"], ids["C"], reviewer="ann")
    fired = tick(quiet.cursor)
    assert len(fired.run_requests) == 1 and not tick(fired.cursor).run_requests
    actions.undo_last(engine, "ann")
    again = tick(fired.cursor)
    assert len(again.run_requests) == 1 and again.run_requests[0].run_key != fired.run_requests[0].run_key
