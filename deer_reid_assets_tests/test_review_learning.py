"""Corrections flow back: review_labels materializes the pairs, the corrected detections enter the
next training manifest, and the re-train sensor (off by default) fires after N new decisions."""

from __future__ import annotations

import dagster as dg
import pytest
import sqlalchemy as sa

from deer_reid_assets.core.reid import triplet_data
from deer_reid_assets.core.review import actions
from deer_reid_assets.definitions import defs
from deer_reid_assets.defs.resources import DatabaseResource
from deer_reid_assets.defs.review import RETRAIN_AFTER_ENV, retrain_on_corrections_sensor, review_labels
from deer_reid_assets_tests.review_seed import seed


def _labelled_of(engine, deer_id):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections WHERE deer_id::text = :d "
                                    "AND is_reviewed"), {"d": deer_id}).all()


@pytest.fixture
def scene(engine, tmp_path):
    ids = seed(engine, tmp_path / "store")
    return ids, DatabaseResource(url=engine.url.render_as_string(hide_password=False))


def test_review_labels_asset_and_the_next_manifest_include_the_corrections(engine, scene):
    ids, database = scene
    actions.apply_action(engine, ids["audit2"], "reassign", reviewer="ann", deer_id=ids["C"],
                         proposed_deer_id=ids["B"], queue_reason="audit")
    actions.apply_action(engine, ids["audit1"], "confirm", reviewer="ann", proposed_deer_id=ids["A"])
    result = dg.materialize([review_labels], resources={"database": database})
    meta = result.asset_materializations_for_node("review_labels")[0].metadata
    assert (meta["pairs"].value, meta["positives"].value, meta["hard_negatives"].value) == (3, 2, 1)
    manifest = triplet_data.build_manifest(engine, seed=0, exclude_eval_queries=False)
    trained = {i["detection_id"]: i["identity"] for i in manifest.items}
    assert ids["audit2"] in trained and ids["audit1"] in trained and ids["new"] not in trained
    assert trained[ids["audit2"]] == trained[next(d for d, _ in _labelled_of(engine, ids["C"]))]


def test_retrain_sensor_is_off_by_default_and_fires_after_n_decisions(engine, scene, monkeypatch):
    ids, database = scene
    assert defs.resolve_sensor_def("retrain_on_corrections_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    monkeypatch.setenv(RETRAIN_AFTER_ENV, "2")
    with dg.build_sensor_context(resources={"database": database}) as ctx:
        first = retrain_on_corrections_sensor(ctx)
    assert not first.run_requests and "0 new correction(s)" in first.skip_reason.skip_message
    actions.apply_action(engine, ids["audit1"], "skip", reviewer="ann")  # skips do not count
    actions.apply_action(engine, ids["audit1"], "confirm", reviewer="ann", proposed_deer_id=ids["A"])
    with dg.build_sensor_context(resources={"database": database}, cursor=first.cursor) as ctx:
        assert not retrain_on_corrections_sensor(ctx).run_requests
    actions.apply_action(engine, ids["audit2"], "confirm", reviewer="ann", proposed_deer_id=ids["B"])
    with dg.build_sensor_context(resources={"database": database}, cursor=first.cursor) as ctx:
        fired = retrain_on_corrections_sensor(ctx)
    assert len(fired.run_requests) == 1 and fired.run_requests[0].tags["deer-reid/corrections"] == "2"
    with dg.build_sensor_context(resources={"database": database}, cursor=fired.cursor) as ctx:
        assert not retrain_on_corrections_sensor(ctx).run_requests  # counted from the cursor on
    monkeypatch.setenv(RETRAIN_AFTER_ENV, "many")
    with dg.build_sensor_context(resources={"database": database}) as ctx, pytest.raises(ValueError, match=RETRAIN_AFTER_ENV):
        retrain_on_corrections_sensor(ctx)
