"""Latency from a photo the existing system's detector finished to our proposal for it, on this machine.

    .venv/bin/python benchmarks/bench_existing_upload.py [--images 60] [--image-size 128]

Builds the existing system's database (the test fixture's route and rows) on a throw-away embedded
PostgreSQL, adopts it, runs the pipeline once (the collection already there), then records one new
photo the way its API and worker do and times: the database sensor's evaluation, then the run it
asks for, the job ``ingest_upload`` (``camera_images`` for that batch, then the upload fast path
``upload_assignments``: crop, embed with the published versions, match, write the proposal),
in-process. Seeded random weights (forward time does not depend on their values). A table, then the
figures as JSON lines. Not a test; ``bench_upload.py`` times the folder route through the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from figures import emit

from deer_reid_assets.core.store import adopt, db
from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS
from deer_reid_assets.defs.ingest import camera_images, upload_batches
from deer_reid_assets.defs.resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource
from deer_reid_assets.defs.sensors import existing_system_sensor
from deer_reid_assets.defs.upload import upload_assignments
from deer_reid_assets_tests import existing_system

UP_TO_PROPOSAL = {"detections", "crops", "baseline_embeddings", "multiscale_embeddings", "efficientnet_embeddings",
                  "published_embeddings", "ensemble_weights", "deer_profiles", "deer_assignments"}


def _subset(keys: set[str]):
    assets = [a for a in ALL_ASSETS if a.key.to_user_string() in keys]
    checks = [c for c in ALL_CHECKS if all(k.asset_key.to_user_string() in keys for k in c.check_keys)]
    return assets + checks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="deer_reid_bench_"))
    server = db.EmbeddedPostgres(home / "pg")
    server.start()
    try:
        url = server.url("postgres")
        db.ensure_database(url, "theirs")
        engine = db.make_engine(db.with_database(url, "theirs"))
        existing_system.build_schema(engine)
        existing_system.populate(engine, home / "photos", n_images=args.images)
        adopt.adopt(engine)
        resources = {
            "database": DatabaseResource(url=engine.url.render_as_string(hide_password=False)),
            "image_store": ImageStoreResource(root=str(home / "store"), upload_dir=str(home / "uploads")),
            "compute": ComputeResource(device="cpu", batch_size=32),
            "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=args.image_size),
        }
        instance = dg.DagsterInstance.ephemeral()
        t = time.perf_counter()
        assert dg.materialize(_subset(UP_TO_PROPOSAL), resources=resources, instance=instance).success
        first = time.perf_counter() - t
        cursor = existing_system_sensor(dg.build_sensor_context(instance=instance, resources=resources)).cursor

        photo = home / "new.jpg"
        shutil.copy(sorted((home / "photos" / "images").rglob("*.jpg"))[0], photo)
        image_id, det_id, now = str(uuid.uuid4()), str(uuid.uuid4()), datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO images (id, filename, path, timestamp, created_at, location_id, "
                                 "processing_status) SELECT :i, 'new.jpg', :p, :t, :t, id, 'completed' FROM locations "
                                 "ORDER BY name LIMIT 1"), {"i": image_id, "p": str(photo), "t": now})
            conn.execute(sa.text("INSERT INTO detections (id, image_id, bbox, confidence, created_at, classification) "
                                 "VALUES (:d, :i, CAST(:b AS json), 0.9, :t, 'buck')"),
                         {"d": det_id, "i": image_id, "t": now,
                          "b": json.dumps({"x": 150, "y": 80, "width": 260, "height": 260})})
        timings = {}
        t0 = time.perf_counter()
        result = existing_system_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
        timings["sensor evaluation"] = time.perf_counter() - t0
        request = result.run_requests[0]
        instance.add_dynamic_partitions(upload_batches.name, [request.partition_key])
        t = time.perf_counter()
        run = dg.materialize([camera_images, upload_assignments], resources=resources, instance=instance,
                             partition_key=request.partition_key, run_config=request.run_config)
        assert run.success
        timings["ingest_upload run: camera_images + upload_assignments (in-process)"] = time.perf_counter() - t
        phases = run.asset_materializations_for_node("upload_assignments")[0].metadata["seconds"].value
        for phase, seconds in phases.items():
            timings[f"  of which {phase}"] = seconds
        with engine.connect() as conn:
            proposed = conn.execute(sa.text("SELECT count(*) FROM reid_match_proposals WHERE detection_id = :d"),
                                    {"d": det_id}).scalar()
        timings["total, finished detection -> proposal"] = time.perf_counter() - t0
        print(f"collection: {args.images} photos; first full run {first:.1f} s; crops at {args.image_size} px")
        for name, seconds in timings.items():
            print(f"| {name} | {seconds:.2f} s |")
        print(f"proposal rows for the new detection: {proposed}")
        device = f"cpu ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})"
        emit("existing_upload_sensor_evaluation", timings["sensor evaluation"], "s", device)
        emit("existing_upload_finished_detection_to_proposal", timings["total, finished detection -> proposal"],
             "s", device)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
