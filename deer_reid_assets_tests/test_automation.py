"""Lineage that recomputes: after real runs on a tiny data set, re-materializing a model asset (or
bumping its code version) makes the automation conditions request exactly what lies downstream of
it; a failed blocking audit stops the publish step and everything after it."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS
from deer_reid_assets.defs import embeddings, matching
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
from deer_reid_assets_tests.helpers import run_pipeline

# reid_evaluation and embedding_report are not among them: they run nightly or on demand (see the test below)
AFTER_PUBLISH = {"published_embeddings", "ensemble_weights", "deer_profiles", "deer_assignments",
                 "physical_features"}


@pytest.fixture
def world(engine, tmp_path):
    data = tmp_path / "data"
    generate_dataset(data, SyntheticConfig(n_images=24, n_bucks=3, n_does=2, seed=5))
    resources = {
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(data)),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=48),
    }
    with dg.instance_for_test() as instance:
        assert run_pipeline(resources, instance=instance).success
        defs = dg.Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, resources=resources)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert _requested(settled) == set()  # everything is up to date
        yield instance, defs, resources, settled.cursor


def _new_weights(resources: dict) -> dict:
    return {**resources, "model_weights": ModelWeightsResource(weights="random", seed=1, image_size=48)}


def _requested(result) -> set[str]:
    return {key.to_user_string() for key in (a.key for a in ALL_ASSETS) if result.get_num_requested(key)}


def test_new_model_version_requests_exactly_its_downstream(world):
    instance, defs, resources, cursor = world
    # a new multi-scale model (other weights): its asset and its audit run again, as a run from the UI would
    run = dg.materialize([embeddings.multiscale_embeddings, embeddings.multiscale_audit],
                         resources=_new_weights(resources), instance=instance,
                         run_config={"ops": {"multiscale_embeddings_audit": {"config": {"tolerance": 1.0}}}})
    assert run.success
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(result) == AFTER_PUBLISH


def test_failed_audit_blocks_publish_and_everything_after(world):
    instance, defs, resources, cursor = world
    run = dg.materialize([embeddings.multiscale_embeddings, embeddings.multiscale_audit],
                         resources=_new_weights(resources), instance=instance, raise_on_error=False,
                         run_config={"ops": {"multiscale_embeddings_audit": {"config": {"tolerance": -1.0}}}})
    checks = run.get_asset_check_evaluations()
    assert checks and not checks[0].passed
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(result) == set()


def test_evaluation_and_report_are_requested_once_a_night_not_after_matching(world):
    instance, defs, resources, cursor = world
    assert dg.materialize([matching.deer_assignments], resources=resources, instance=instance).success
    after_matching = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(after_matching) == {"physical_features"}  # downstream of matching; evaluation is not
    night = datetime.now(UTC).replace(hour=3, minute=0, second=0, microsecond=0) + timedelta(days=1)
    at_night = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_matching.cursor,
                                                 evaluation_time=night + timedelta(minutes=1))
    assert _requested(at_night) == {"reid_evaluation", "embedding_report"}


def test_code_version_bump_requests_the_model_and_its_downstream(world):
    instance, _, resources, cursor = world
    bumped, bumped_audit = embeddings.embedding_asset("multiscale", "bumped", code_version="2")
    assets = [bumped if a.key == bumped.key else a for a in ALL_ASSETS]
    checks = [bumped_audit if c.check_keys == bumped_audit.check_keys else c for c in ALL_CHECKS]
    defs = dg.Definitions(assets=assets, asset_checks=checks, resources=resources)
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert _requested(result) == {"multiscale_embeddings"} | AFTER_PUBLISH
