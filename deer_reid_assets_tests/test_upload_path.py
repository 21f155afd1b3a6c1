"""The upload fast path through Dagster's real machinery: after the pipeline ran once, photos dropped
into the upload folder are picked up by the sensor (evaluated through Dagster), and the run it asks
for (job ingest_upload, executed) detects, crops, embeds with the published versions and matches only
the new detections; earlier assignments, the embedding versions and the publish pointers stay as they
were, a bad photo costs only itself, and automation then requests nothing (no evaluation, no report)."""

import os
import time

import dagster as dg
import pytest
import sqlalchemy as sa

from deer_reid_assets.core import matching
from deer_reid_assets.core.store import schema as t
from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS, UPLOAD_ASSETS
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.defs.sensors import camera_upload_sensor, ingest_upload_job
from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
from deer_reid_assets.demo.uploads import drop_photos, split_photos
from deer_reid_assets_tests.helpers import run_pipeline


@pytest.fixture
def world(engine, tmp_path):
    data, uploads = tmp_path / "data", tmp_path / "uploads"
    generate_dataset(data, SyntheticConfig(n_images=30, n_bucks=3, n_does=2, seed=5))
    first, later = split_photos(data, 4)
    resources = {
        "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
        "image_store": ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads),
                                          upload_settle_seconds=1),
        "compute": ComputeResource(device="cpu", batch_size=16),
        "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=48),
    }
    run_config = {"ops": {"camera_images": {"config": {"source_dir": str(data), "files": first}}}}
    with dg.instance_for_test() as instance:
        assert run_pipeline(resources, instance=instance, run_config=run_config).success
        defs = dg.Definitions(assets=ALL_ASSETS + UPLOAD_ASSETS, asset_checks=ALL_CHECKS, jobs=[ingest_upload_job],
                              sensors=[camera_upload_sensor], resources=resources)
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert settled.total_requested == 0
        yield instance, defs, data, uploads, later, settled.cursor, resources["image_store"]


def _state(engine) -> dict:
    d, v, p, lg = t.detections, t.reid_embedding_versions, t.reid_published_embeddings, t.reid_assignment_log
    with engine.connect() as conn:
        return {
            "deer_of": dict(conn.execute(sa.select(d.c.id, d.c.deer_id)).all()),
            "versions": set(conn.execute(sa.select(v.c.version, v.c.status, v.c.config["projection"].astext)).all()),
            "published": dict(conn.execute(sa.select(p.c.model_family, p.c.version)).all()),
            "log": set(conn.execute(sa.select(lg.c.run_id, lg.c.detection_id, lg.c.new_deer_id)).all()),
            "vectors": conn.execute(sa.select(sa.func.count()).select_from(t.reid_embeddings)).scalar(),
            "runs": set(conn.execute(sa.select(t.reid_assignment_runs.c.run_id)).scalars()),
        }


def _run(instance, defs, request) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(ingest_upload_job.name)
    return job.execute_in_process(run_config=request.run_config, instance=instance, partition_key=request.partition_key,
                                  tags=request.tags, raise_on_error=False)


def test_an_upload_is_matched_alone_with_the_published_versions(world, engine):
    instance, defs, data, uploads, later, cursor, store = world
    before = _state(engine)
    photos = drop_photos(data, later, uploads)
    (uploads / "cam01" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # a bad photo in the batch
    an_hour_ago = time.time() - 3600  # settled (the sensor's settle time is not what this test is about)
    for photo in [*photos, uploads / "cam01" / "broken.jpg"]:
        os.utime(photo, (an_hour_ago, an_hour_ago))

    context = dg.build_sensor_context(instance=instance, resources={"image_store": store})
    result = camera_upload_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    (request,) = result.run_requests
    assert len(request.run_config["ops"]["camera_images"]["config"]["files"]) == len(later) + 1
    run = _run(instance, defs, request)
    assert run.success

    after = _state(engine)
    with engine.connect() as conn:
        new = set(after["deer_of"]) - set(before["deer_of"])
        failed = conn.execute(sa.text("SELECT count(*) FROM images WHERE processing_status = 'failed'")).scalar()
    assert len(new) >= len(later) and failed >= 1  # the bad photo is recorded, the others imported
    # the embedding versions and what is published did not change; vectors were added for the new crops only
    assert after["versions"] == before["versions"] and after["published"] == before["published"]
    assert after["vectors"] - before["vectors"] == len(new) * len(before["published"])
    # one new matching run, which logged exactly the new detections; earlier ones kept their deer and their log
    (run_id,) = after["runs"] - before["runs"]
    logged = {det for rid, det, _ in after["log"] if rid == run_id}
    assert logged == new
    assert before["log"] <= after["log"]
    assert {d: after["deer_of"][d] for d in before["deer_of"]} == before["deer_of"]
    meta = run.asset_materializations_for_node("upload_assignments")[0].metadata
    assert meta["new_detections_matched"].value == len(new) and meta["assignment_run"].value == run_id
    # logged like deer_assignments' runs: it rolls back
    matching.rollback_assignment_run(engine, run_id)
    assert all(v is None for d, v in _state(engine)["deer_of"].items() if d in new)

    # automation recomputes nothing for an upload: no detections/crops/embeddings, no evaluation, no report
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    assert settled.total_requested == 0

    # the same photos again (a retry, or the run re-executed): nothing embedded or matched twice
    again = _run(instance, defs, request)
    assert again.success and _state(engine)["vectors"] == after["vectors"]
    assert again.asset_materializations_for_node("upload_assignments")[0].metadata["new_detections_matched"].value == 0


def _version_row(tmp_path, **config):
    from types import SimpleNamespace

    from deer_reid_assets.core.embed.finetuned import identity_projection

    path = tmp_path / "p.npz"
    identity_projection().save(path)
    base = {"family": "efficientnet", "weights_id": "ckpt-0123456789ab", "image_size": 32, "code_version": "1",
            "projection": identity_projection().fingerprint(), "projection_path": str(path)}
    return SimpleNamespace(version="effb0-test", model_family="efficientnet", weights_id=base["weights_id"],
                           weights_source="checkpoint", config={**base, **config})


def test_a_published_version_this_deployment_cannot_rebuild_is_one_clear_error(tmp_path):
    from deer_reid_assets.core.families import EmbedderSettings
    from deer_reid_assets.core.upload_path import UploadPathError, embedder_for_version

    settings = EmbedderSettings(weights="random", image_size=32)
    with pytest.raises(UploadPathError, match="was embedded with ckpt-0123456789ab at 32 px; this deployment builds "
                                              "random-s0 at 32 px"):
        embedder_for_version(None, _version_row(tmp_path), settings)
    with pytest.raises(UploadPathError, match="projection of published version effb0-test cannot be read"):
        embedder_for_version(None, _version_row(tmp_path, projection_path=str(tmp_path / "gone.npz")), settings)
    # a version of seeded random weights is rebuilt from its own record, whatever the deployment's settings say
    row = _version_row(tmp_path, weights_id="random-s3")
    row.weights_id, row.weights_source = "random-s3", "random"
    embedder = embedder_for_version(None, row, EmbedderSettings(weights="auto", seed=0, image_size=224))
    assert embedder.version_key()["weights_id"] == "random-s3" and embedder.image_size == 32
