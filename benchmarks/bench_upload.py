"""From photos dropped into the upload folder to their assignments, through the running Dagster daemon.

    .venv/bin/python benchmarks/bench_upload.py [--images 60] [--upload 12] [--repeats 2] [--image-size 224]

On a throw-away home (embedded PostgreSQL, Dagster instance on it as `deer-reid serve` has it,
deploy/dagster.yaml): generates the demo's synthetic photos, imports all but the last photos and runs
the pipeline once in-process (seeded random weights: forward time does not depend on their values),
then starts `dagster-daemon run` with the project's workspace and, per repeat, drops ``--upload``
photos of the same deer (a new camera folder, with a detections.json standing in for a detector, no
labels) and times until every one of their detections has its assignment-run row. The phases come
from the run's Dagster events and from the upload_assignments step's own timings. A table, then the
figures as JSON lines. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from figures import emit

REPO = Path(__file__).resolve().parents[1]


def _import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return float(out.stdout.strip())


def _prepare(home: Path, n_images: int, n_upload: int, image_size: int):
    import dagster as dg

    from deer_reid_assets.core.store import db, migrations
    from deer_reid_assets.definitions import ALL_CHECKS, graph
    from deer_reid_assets.defs.ingest import upload_batches
    from deer_reid_assets.defs.instance import prepare_dagster_home
    from deer_reid_assets.defs.resources import (
        ComputeResource,
        DatabaseResource,
        ImageStoreResource,
        ModelWeightsResource,
    )
    from deer_reid_assets.demo.synthetic import SyntheticConfig, generate_dataset
    from deer_reid_assets.demo.uploads import split_photos

    os.environ["DEER_REID_HOME"] = str(home)
    url = db.embedded().start()
    os.environ["DATABASE_URL"] = url
    migrations.migrate(db.make_engine(url))
    prepare_dagster_home(url, write_env_file=False)
    data = home / "data"
    generate_dataset(data, SyntheticConfig(n_images=n_images, n_bucks=6, n_does=3, seed=11))
    first, later = split_photos(data, n_upload)
    resources = {"database": DatabaseResource(), "image_store": ImageStoreResource(),
                 "compute": ComputeResource(device="cpu"),
                 "model_weights": ModelWeightsResource(weights="random", seed=0, image_size=image_size)}
    assets = graph(train=False)
    keys = {a.key for a in assets}
    assets += [c for c in ALL_CHECKS if all(k.asset_key in keys for k in c.check_keys)]
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(upload_batches.name, ["demo"])
    started = time.perf_counter()
    run = dg.materialize(assets, resources=resources, instance=instance, partition_key="demo",
                         run_config={"ops": {"camera_images": {"config": {"source_dir": str(data), "files": first}}}})
    if not run.success:
        raise SystemExit("the preparing pipeline run failed")
    return instance, db.make_engine(url), data, later, time.perf_counter() - started


def _wait_for_daemon(instance, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        beats = instance.get_daemon_heartbeats()
        if {"SENSOR", "QUEUED_RUN_COORDINATOR", "ASSET"} <= set(beats):
            return
        time.sleep(0.5)
    raise SystemExit("the daemon did not report its heartbeats in time")


def _events(instance, run_id: str) -> dict[str, float]:
    """First timestamp of each run event (``STEP_START:camera_images`` for steps)."""
    times: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        key = event.event_type.name + (f":{event.step_key}" if event.step_key else "")
        times.setdefault(key, record.timestamp)
    return times


def _one_drop(instance, engine, data: Path, photos: list[str], camera: str, timeout: float) -> dict[str, float]:
    import dagster as dg

    from deer_reid_assets.core.store.upload_batches import batch_progress
    from deer_reid_assets.demo.uploads import drop_photos

    uploads = Path(os.environ["DEER_REID_HOME"]) / "store" / "uploads"
    drop_photos(data, photos, uploads, camera=camera)
    dropped = time.time()
    batch = f"{camera}__{datetime.now(UTC).date().isoformat()}"
    expected = None
    while time.time() - dropped < timeout:
        with engine.connect() as conn:
            progress = batch_progress(conn, batch)
        if progress["detections"] and progress["cropped"] == progress["detections"] and \
                progress["matched"] >= progress["crops_ok"]:
            expected = progress
            break
        time.sleep(0.1)
    done = time.time()
    if expected is None:
        raise SystemExit(f"batch {batch}: not matched within {timeout:.0f} s (progress {progress})")
    runs = instance.get_run_records(dg.RunsFilter(job_name="ingest_upload", tags={"deer-reid/upload-batch": batch}))
    (record,) = runs
    run_id = record.dagster_run.run_id
    deadline = time.time() + 120
    while instance.get_run_by_id(run_id).status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE) \
            and time.time() < deadline:
        time.sleep(0.2)
    ev = _events(instance, run_id)
    created = record.create_timestamp.timestamp()
    meta = next(e for e in instance.all_logs(run_id) if e.dagster_event and
                e.dagster_event.event_type.name == "ASSET_MATERIALIZATION" and
                e.dagster_event.step_key == "upload_assignments").dagster_event.event_specific_data.materialization.metadata
    inner = meta["seconds"].value
    phases = {
        "sensor pickup (settle + sensor interval)": created - dropped,
        "run queued -> launched": ev["RUN_STARTING"] - created,
        "run process start (python, dagster, code location)": ev["RUN_START"] - ev["RUN_STARTING"],
        "camera_images step (import photos + detections.json)": (ev["STEP_SUCCESS:camera_images"]
                                                                - ev["STEP_START:camera_images"]),
        "between steps": ev["STEP_START:upload_assignments"] - ev["STEP_SUCCESS:camera_images"],
        "detect (sidecar detections; no detector weights here)": inner.get("detect", 0.0),
        "crop": inner.get("crop", 0.0),
        "import torch (device settings)": inner.get("import_torch", 0.0),
        "load models (backbones + projections)": inner.get("load_models", 0.0),
        "embed (matcher's families)": inner.get("embed", 0.0),
        "select + match + write": inner.get("select", 0.0) + inner.get("match", 0.0),
        "drop -> every detection matched (poll, 0.1 s)": done - dropped,
        "after: embed other published families": inner.get("load_models_after_match", 0.0)
        + inner.get("embed_after_match", 0.0),
        "drop -> run finished": ev.get("RUN_SUCCESS", done) - dropped,
    }
    phases["detections"] = expected["detections"]
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=60, help="photos of the prepared collection (incl. uploads)")
    parser.add_argument("--upload", type=int, default=12, help="photos per drop")
    parser.add_argument("--repeats", type=int, default=2, help="drops, one after another (each a new camera)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home (printed)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="deer_reid_bench_upload_"))
    daemon = None
    try:
        instance, engine, data, later, prep = _prepare(home, args.images, args.upload * args.repeats, args.image_size)
        torch_s, code_s = _import_seconds("torch"), _import_seconds("deer_reid_assets.definitions")
        started = time.time()
        # cwd=home: Dagster reads a .env in the daemon's directory over this environment (a checkout's
        # .env from `deer-reid demo` would send the code location to another home).
        daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                                   str(REPO / "workspace.yaml")], cwd=home, env=dict(os.environ),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_daemon(instance)
        time.sleep(12)  # code server up, first sensor and automation ticks done
        ready = time.time() - started
        drops = [_one_drop(instance, engine, data, later[i * args.upload:(i + 1) * args.upload], f"cam{90 + i}",
                           args.timeout) for i in range(args.repeats)]
        load = os.getloadavg()[0]
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
        from deer_reid_assets.core.store import db

        db.embedded().stop()
        if args.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    device = f"cpu ({os.cpu_count()} cores, load {load:.1f})"
    print(f"prepared: {args.images - args.upload * args.repeats} photos through the whole pipeline in {prep:.0f} s "
          f"(seeded random weights, crops at {args.image_size} px); daemon ready after {ready:.0f} s; "
          f"import torch {torch_s:.2f} s, import the code location {code_s:.2f} s (fresh processes)")
    print(f"{args.repeats} drop(s) of {args.upload} photos ({', '.join(str(int(d['detections'])) for d in drops)} "
          f"detections); {device}")
    print("| phase | " + " | ".join(f"drop {i + 1} (s)" for i in range(len(drops))) + " |")
    print("| --- |" + " ---: |" * len(drops))
    for phase in drops[0]:
        if phase != "detections":
            print(f"| {phase} | " + " | ".join(f"{d[phase]:.2f}" for d in drops) + " |")
    total = [d["drop -> every detection matched (poll, 0.1 s)"] for d in drops]
    emit("upload_drop_to_assignments_median", statistics.median(total), "s", device)
    emit("upload_drop_to_assignments_max", max(total), "s", device)
    for key, name in (("sensor pickup (settle + sensor interval)", "upload_sensor_pickup"),
                      ("run process start (python, dagster, code location)", "upload_run_process_start"),
                      ("import torch (device settings)", "upload_import_torch"),
                      ("load models (backbones + projections)", "upload_load_models"),
                      ("embed (matcher's families)", "upload_embed"),
                      ("select + match + write", "upload_match")):
        emit(f"{name}_median", statistics.median(d[key] for d in drops), "s", device)
    emit("import_torch", torch_s, "s", device)
    emit("import_code_location", code_s, "s", device)


if __name__ == "__main__":
    main()
