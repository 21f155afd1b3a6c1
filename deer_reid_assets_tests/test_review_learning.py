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


def test_a_correction_reaches_the_manifest_and_puts_the_confused_pair_in_one_batch(engine, tmp_path):
    from deer_reid_assets.core.reid.sampler import PKSampler
    from deer_reid_assets.core.review import labels

    ids = seed(engine, tmp_path / "store", extra_deer=("D",))
    # audit2 was proposed as B; the person says C: B is a confirmed hard negative of that detection
    actions.apply_action(engine, ids["audit2"], "reassign", reviewer="ann", deer_id=ids["C"],
                         proposed_deer_id=ids["B"], queue_reason="audit")
    with engine.connect() as conn:
        confused = labels.confusers(conn)
    assert confused == {"B": ["C"], "C": ["B"]}
    manifest = triplet_data.build_manifest(engine, seed=0, exclude_eval_queries=False)
    assert {i["detection_id"]: i["identity"] for i in manifest.items}[ids["audit2"]] == "C"
    names = [i["identity"] for i in manifest.items]

    def batches(**kwargs):
        return [frozenset(names[i] for i in b) for b in PKSampler(names, p=2, k=2, batches=24, seed=0, **kwargs)]

    paired = batches(confusers=confused)
    assert all(b == {"B", "C"} for b in paired if b & {"B", "C"}) and {"B", "C"} in paired
    assert any(len(b & {"B", "C"}) == 1 for b in batches())  # without the corrections they are drawn apart


def test_with_auto_retrain_on_n_corrections_start_a_training_run_that_the_ab_gate_judges(engine, tmp_path, monkeypatch):
    """The sensor is evaluated as the daemon does (``evaluate_tick`` on a code location's definitions),
    its run request is executed as the job it names, and the A/B audit of finetuned_embeddings judges."""
    from deer_reid_assets.core.review import queue
    from deer_reid_assets.core.store import review as review_store
    from deer_reid_assets.definitions import ALL_CHECKS, graph
    from deer_reid_assets.defs.embeddings import finetuned_audit, finetuned_embeddings
    from deer_reid_assets.defs.resources import ComputeResource, ImageStoreResource, ModelWeightsResource
    from deer_reid_assets.defs.review import retrain_from_corrections_job
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
    from deer_reid_assets_tests.helpers import run_pipeline

    generate_dataset(tmp_path / "data", SyntheticConfig(n_images=70, n_bucks=4, n_does=2, seed=6, labelled_fraction=0.8))
    resources = {
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(tmp_path / "data")),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=48),
    }
    instance = dg.DagsterInstance.ephemeral()
    assert run_pipeline(resources, instance=instance).success
    location = dg.Definitions(assets=[*graph(train=True), review_labels], asset_checks=ALL_CHECKS,
                              jobs=[retrain_from_corrections_job], sensors=[retrain_on_corrections_sensor],
                              resources=resources)
    sensor = location.resolve_sensor_def("retrain_on_corrections_sensor")
    monkeypatch.setenv(RETRAIN_AFTER_ENV, "3")

    def tick(cursor=None):
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=location,
                                     resources=resources) as ctx:
            return sensor.evaluate_tick(ctx)

    start = tick()
    assert not start.run_requests
    with engine.connect() as conn:
        queries = set(conn.execute(sa.text("SELECT detection_id::text FROM reid_eval_splits "
                                           "WHERE role IN ('val_query', 'test_query')")).scalars())
        pending = queue.order_queue(review_store.pending_detections(conn))
    assert any(i.detection_id in queries for i in pending)  # corrected queries stay out of training (below)
    items = [i for i in pending if len(i.candidates) >= 2 and i.detection_id not in queries]
    wrong, right = items[0], items[1]
    other = next(c["deer_id"] for c in wrong.candidates if c["deer_id"] != wrong.proposed_deer_id)
    actions.apply_action(engine, wrong.detection_id, "reassign", reviewer="ann", deer_id=other,
                         proposed_deer_id=wrong.proposed_deer_id, queue_reason=wrong.reason)
    assert not tick(start.cursor).run_requests  # one of three
    actions.apply_action(engine, right.detection_id, "confirm", reviewer="ann", proposed_deer_id=right.proposed_deer_id)
    query = next(i for i in pending if i.detection_id in queries and i.proposed_deer_id)
    actions.apply_action(engine, query.detection_id, "confirm", reviewer="ann", proposed_deer_id=query.proposed_deer_id)
    (request,) = tick(start.cursor).run_requests
    assert request.job_name in (None, "retrain_from_corrections") and request.tags["deer-reid/corrections"] == "3"

    tiny = {"profile": "cpu", "epochs": 1, "image_size": 48, "p": 3, "k": 2, "batches_per_epoch": 2}
    run = location.resolve_job_def("retrain_from_corrections").execute_in_process(
        run_config={"ops": {"finetuned_reid_model": {"config": tiny}}}, instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": sensor.name})
    assert run.success
    meta = {e.event_specific_data.materialization.asset_key.to_user_string():
            {k: v.value for k, v in e.event_specific_data.materialization.metadata.items()}
            for e in run.get_asset_materialization_events()}
    assert meta["triplet_dataset"]["review_corrections_included"] == 2
    assert meta["triplet_dataset"]["review_corrections_kept_for_evaluation"] == 1
    model = meta["finetuned_reid_model"]
    assert model["hard_negative_pairs"] == 1 and model["guard"]
    with engine.connect() as conn:
        trained_as = conn.execute(sa.text(
            "SELECT d.name FROM reid_training_items t JOIN deer d ON d.name = t.identity WHERE t.version = :v "
            "AND t.detection_id = CAST(:det AS uuid)"), {"v": model["manifest_version"], "det": wrong.detection_id}).scalar()
        other_name = conn.execute(sa.text("SELECT name FROM deer WHERE id = CAST(:d AS uuid)"), {"d": other}).scalar()
    assert trained_as == other_name  # the correction is a label of the manifest the model trained on
    if model["status"] == "collapsed":  # the guard stopped it before the A/B: judge the embeddings as if it passed
        assert "collapsed" in meta["finetuned_embeddings"]["skipped"]
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE reid_models SET status = 'ok' WHERE version = :v"), {"v": model["model_version"]})
        run = dg.materialize([finetuned_embeddings, finetuned_audit], resources=resources, instance=instance)
    (check,) = [c for c in run.get_asset_check_evaluations() if c.asset_key.to_user_string() == "finetuned_embeddings"]
    assert "A/B on the test queries" in check.metadata["audit"].value
