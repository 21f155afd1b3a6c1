"""The database sensor: photos the existing system's API stored and its worker's detector finished
become camera_images runs, each once and only once, evaluated through Dagster on a real instance."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from deer_reid_assets.core.store import adopt, db
from deer_reid_assets.defs.ingest import camera_images, upload_batches
from deer_reid_assets.defs.resources import DatabaseResource, ImageStoreResource
from deer_reid_assets.defs.sensors import existing_system_sensor
from deer_reid_assets_tests import existing_system


@pytest.fixture
def adopted(empty_db_url, tmp_path):
    engine = db.make_engine(empty_db_url)
    existing_system.build_schema(engine)
    existing_system.populate(engine, tmp_path / "photos", n_images=12)
    adopt.adopt(engine)
    yield engine, DatabaseResource(url=engine.url.render_as_string(hide_password=False))
    engine.dispose()


def _upload(engine, photo: str, *, status: str = "completed", finished: datetime | None = None) -> str:
    """A photo as its API and worker record it: the image row, then the detector's detection."""
    image_id = str(uuid.uuid4())
    finished = finished or datetime.now(UTC)
    with engine.begin() as conn:
        loc = conn.execute(sa.text("SELECT id FROM locations ORDER BY name LIMIT 1")).scalar()
        conn.execute(sa.text(
            "INSERT INTO images (id, filename, path, timestamp, created_at, location_id, processing_status) "
            "VALUES (:i, 'new.jpg', :p, :t, :t, :l, :s)"), {"i": image_id, "p": photo, "t": finished, "l": loc, "s": status})
        conn.execute(sa.text(
            "INSERT INTO detections (id, image_id, bbox, confidence, created_at, classification) "
            "VALUES (:i, :im, CAST(:b AS json), 0.9, :t, 'buck')"),
            {"i": str(uuid.uuid4()), "im": image_id, "b": json.dumps({"x": 10, "y": 10, "width": 80, "height": 60}),
             "t": finished})
    return image_id


def _tick(instance, database, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"database": database})
    result = existing_system_sensor(context)
    return result, result.cursor


def test_database_sensor_submits_each_finished_photo_once(adopted, tmp_path):
    engine, database = adopted
    import shutil

    (tmp_path / "new").mkdir()
    photos = []
    for i, source in enumerate(sorted((tmp_path / "photos" / "images").rglob("*.jpg"))[:2]):
        photos.append(tmp_path / "new" / f"upload{i}.jpg")  # its API stores each upload under a new path
        shutil.copy(source, photos[-1])
    with dg.instance_for_test() as instance:
        first, cursor = _tick(instance, database, None)
        assert not first.run_requests  # starts at the present: the collection there is not resubmitted
        new = _upload(engine, str(photos[0]))
        waiting = _upload(engine, str(photos[1]), status="processing")  # the detector is not done with it
        second, cursor = _tick(instance, database, cursor)
        assert [r.run_config["ops"]["camera_images"]["config"]["image_ids"] for r in second.run_requests] == [[new]]
        third, cursor = _tick(instance, database, cursor)
        assert not third.run_requests  # once only
        # the detector finishes the waiting photo; its transaction committed late, with an earlier time
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE images SET processing_status = 'completed' WHERE id = :i"), {"i": waiting})
            conn.execute(sa.text("UPDATE detections SET created_at = now() - interval '2 minutes' WHERE image_id = :i"),
                         {"i": waiting})
        fourth, cursor = _tick(instance, database, cursor)
        assert [r.run_config["ops"]["camera_images"]["config"]["image_ids"] for r in fourth.run_requests] == [[waiting]]
        assert not _tick(instance, database, cursor)[0].run_requests

        # the run it asks for records the photo as one batch of this pipeline, changing nothing of theirs
        request = second.run_requests[0]
        instance.add_dynamic_partitions(upload_batches.name, [request.partition_key])
        before = existing_system.fingerprint(engine)
        result = dg.materialize([camera_images], instance=instance, partition_key=request.partition_key,
                                run_config=request.run_config, resources={
                                    "database": database,
                                    "image_store": ImageStoreResource(root=str(tmp_path / "store"))})
        assert result.success
        assert existing_system.fingerprint(engine) == before
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT import_batch FROM reid_image_files WHERE image_id = :i"),
                                {"i": new}).scalar() == request.partition_key


def test_database_sensor_does_nothing_on_a_stand_alone_install(engine):
    with dg.instance_for_test() as instance:
        database = DatabaseResource(url=engine.url.render_as_string(hide_password=False))
        result, _ = _tick(instance, database, None)
        assert not result.run_requests and "stand-alone" in result.skip_reason.skip_message


def test_a_stale_cursor_window_is_forgotten(adopted):
    from deer_reid_assets.core.store import existing_uploads

    engine, _ = adopted
    mark = datetime.now(UTC) + timedelta(days=1)  # nothing finished after it
    stale = (mark - timedelta(hours=1)).isoformat()  # outside the look-back window: forgotten
    cursor = json.dumps({"t": mark.isoformat(), "recent": [[str(uuid.uuid4()), stale]]})
    with engine.connect() as conn:
        scan = existing_uploads.scan_finished(conn, cursor)
    assert json.loads(scan.cursor)["recent"] == []
    with pytest.raises(ValueError, match="malformed database-upload cursor"):
        with engine.connect() as conn:
            existing_uploads.scan_finished(conn, "{not json")
