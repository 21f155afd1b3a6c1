"""The camera-upload sensor, evaluated through Dagster (build_sensor_context) on a real instance with
PostgreSQL storage: batches per camera and day, never a photo twice, partial files wait, bursts are
spread over evaluations, names escaping the folder are refused; its run requests import exactly
their photos."""

import os
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.store import db
from deer_reid_assets.defs.ingest import camera_images, upload_batches
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.defs.sensors import camera_upload_sensor
from deer_reid_assets.defs.upload import upload_assignments

OLD = time.time() - 3600  # photos written an hour ago: settled


@pytest.fixture
def instance(pg_server, tmp_path):
    name = f"dagster_sensor_{time.time_ns() % 10**9}"
    db.ensure_database(pg_server, name)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": db.with_database(pg_server, name)}}}) as inst:
        assert type(inst.run_storage).__name__ == "PostgresRunStorage"
        yield inst


def _photo(path: Path, seed: int, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(seed).random((48, 64, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(path, format="JPEG")
    os.utime(path, (mtime, mtime))
    return path


def _tick(instance, store: ImageStoreResource, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"image_store": store})
    result = camera_upload_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _files(result) -> list[str]:
    return [f for r in result.run_requests for f in r.run_config["ops"]["camera_images"]["config"]["files"]]


def test_batches_per_camera_and_day_and_never_twice(instance, tmp_path):
    uploads = tmp_path / "uploads"
    for i in range(3):
        _photo(uploads / "cam01" / f"a{i}.jpg", i)
    _photo(uploads / "cam02" / "b0.jpg", 9)
    _photo(uploads / "cam02" / "b1.jpg", 10, mtime=OLD - 86400 * 3)  # another capture day
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=1)

    second = _tick(instance, store, None)  # settled an hour ago: taken at the first evaluation
    keys = sorted(r.partition_key for r in second.run_requests)
    assert len(keys) == 3 and sum(k.startswith("cam01__") for k in keys) == 1
    assert sorted(_files(second)) == ["cam01/a0.jpg", "cam01/a1.jpg", "cam01/a2.jpg", "cam02/b0.jpg", "cam02/b1.jpg"]
    assert set(instance.get_dynamic_partitions(upload_batches.name)) == set(keys)
    third = _tick(instance, store, second.cursor)
    assert third.run_requests == []
    # a new photo in a known batch is submitted alone, under the same partition, with a new run key
    _photo(uploads / "cam01" / "a3.jpg", 3)
    fourth = _tick(instance, store, third.cursor)
    assert _files(fourth) == ["cam01/a3.jpg"]
    assert fourth.run_requests[0].partition_key in keys
    assert fourth.run_requests[0].run_key not in {r.run_key for r in second.run_requests}


def test_file_still_being_written_waits(instance, tmp_path):
    uploads = tmp_path / "uploads"
    growing = _photo(uploads / "cam01" / "big.jpg", 1)
    whole = growing.read_bytes()
    growing.write_bytes(whole[: len(whole) // 2])  # the first half written just now: young and incomplete
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=600)
    first = _tick(instance, store, None)
    assert first.run_requests == [] and "still being written" in first.skip_reason.skip_message  # too young
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=1)
    with open(growing, "ab") as handle:  # the camera is still writing (its clock says an hour ago)
        handle.write(whole[len(whole) // 2 :] + b"\0" * 100)
    os.utime(growing, (OLD, OLD))
    second = _tick(instance, store, first.cursor)
    assert second.run_requests == []  # changed since the last evaluation: waits, however old it looks
    third = _tick(instance, store, second.cursor)
    assert _files(third) == ["cam01/big.jpg"]


def test_a_whole_photo_written_just_now_goes_at_once(instance, tmp_path):
    uploads = tmp_path / "uploads"
    _photo(uploads / "cam01" / "new.jpg", 2, mtime=time.time())  # a whole JPEG, copied in a moment ago
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=600)
    assert _files(_tick(instance, store, None)) == ["cam01/new.jpg"]  # its bytes say it is whole: no settle wait


def test_burst_of_1200_is_spread_over_evaluations_within_the_time_limit(instance, tmp_path):
    uploads = tmp_path / "uploads"
    source = _photo(tmp_path / "one.jpg", 0)
    for i in range(1200):
        target = uploads / f"cam{i % 3}" / f"p{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=1,
                               upload_max_files_per_tick=500)
    cursor, counts, seen = None, [], []
    for _ in range(5):
        started = time.monotonic()
        result = _tick(instance, store, cursor)
        assert time.monotonic() - started < 20  # far inside the 60 s sensor limit
        cursor = result.cursor
        counts.append(len(_files(result)))
        seen += _files(result)
    assert counts == [500, 500, 200, 0, 0]
    assert len(seen) == len(set(seen)) == 1200


def test_names_escaping_the_folder_are_refused(instance, tmp_path):
    uploads = tmp_path / "uploads"
    outside = _photo(tmp_path / "secret" / "outside.jpg", 5)
    _photo(uploads / "cam01" / "ok.jpg", 6)
    (uploads / "cam01" / "innocent.jpg").symlink_to(outside)
    (uploads / "cam03").symlink_to(tmp_path / "secret", target_is_directory=True)
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=1)
    first = _tick(instance, store, None)
    assert _files(first) == ["cam01/ok.jpg"]
    assert _tick(instance, store, first.cursor).run_requests == []


def test_a_sensor_run_request_imports_exactly_its_photos(instance, engine, tmp_path):
    uploads = tmp_path / "uploads"
    _photo(uploads / "cam01" / "a.jpg", 1)
    _photo(uploads / "cam01" / "b.jpg", 2)
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=1)
    request = _tick(instance, store, None).run_requests[0]
    _photo(uploads / "cam01" / "late.jpg", 3)  # arrives after the request was made: not part of it
    result = dg.materialize([camera_images], instance=instance, partition_key=request.partition_key,
                            run_config=request.run_config,
                            resources={"database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
                                       "image_store": store})
    assert result.success
    with engine.connect() as conn:
        names = sorted(conn.execute(sa.text("SELECT filename FROM images")).scalars())
        batch = conn.execute(sa.text("SELECT DISTINCT import_batch FROM reid_image_files")).scalar()
    assert names == ["a.jpg", "b.jpg"] and batch == request.partition_key


def test_a_failed_import_run_is_requested_again_and_then_imports_its_photos(instance, engine, tmp_path):
    """Issue 12: the cursor marks photos submitted when the run is requested; a run that failed (here: a
    detections.json that is not JSON at all) used to leave its photos never imported."""
    from deer_reid_assets.defs.sensors import ATTEMPT_TAG, RETRY_DELAY_SECONDS, ingest_upload_job, retry_requests

    uploads = tmp_path / "uploads"
    _photo(uploads / "cam01" / "a.jpg", 1)
    (uploads / "detections.json").write_text('{"format": "deer-reid-detections/1", "images": [')  # truncated copy
    store = ImageStoreResource(root=str(tmp_path / "store"), upload_dir=str(uploads), upload_settle_seconds=1)
    resources = {"database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)), "image_store": store,
                 "compute": ComputeResource(device="cpu"), "model_weights": ModelWeightsResource(weights="random")}
    job = dg.Definitions(assets=[camera_images, upload_assignments], jobs=[ingest_upload_job],
                         resources=resources).resolve_job_def(
        ingest_upload_job.name)

    def launch(request):
        tags = {**request.tags, "dagster/sensor_name": "camera_upload_sensor", "dagster/run_key": request.run_key}
        return job.execute_in_process(run_config=request.run_config, instance=instance, partition_key=request.partition_key,
                                      tags=tags, raise_on_error=False)

    (request,) = (first := _tick(instance, store, None)).run_requests
    cursor = first.cursor
    assert not launch(request).success
    cursor = _tick(instance, store, cursor).cursor
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"image_store": store})
    assert retry_requests(context) == []  # too soon: the retry waits for the back-off
    (retry,) = retry_requests(context, now=time.time() + RETRY_DELAY_SECONDS + 1)
    assert retry.run_config == request.run_config and retry.partition_key == request.partition_key
    assert retry.tags[ATTEMPT_TAG] == "2" and retry.run_key.startswith("retry:")
    (uploads / "detections.json").unlink()  # fixed by the user in the meantime
    assert launch(retry).success
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT filename FROM images")).scalars().all() == ["a.jpg"]
    # only the failed run has a retry request (same run key again: Dagster launches a run key once)
    assert [r.run_key for r in retry_requests(context, now=time.time() + 10**6)] == [retry.run_key]
