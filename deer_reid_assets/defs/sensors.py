"""The camera-upload sensor: new photos in the upload folder become import runs, one per batch
(camera x capture day), and automation carries them through crops, embeddings and matching."""

import time

import dagster as dg

from deer_reid_assets.core import coexistence
from deer_reid_assets.core.ingest.uploads import scan_uploads
from deer_reid_assets.core.store import existing_uploads

from .ingest import camera_images, upload_batches
from .resources import DatabaseResource, ImageStoreResource
from .upload import upload_assignments

ingest_upload_job = dg.define_asset_job(
    "ingest_upload",
    selection=[camera_images, upload_assignments],
    partitions_def=upload_batches,
    description="One batch of uploaded photos from import to assignments (the sensors launch it): camera_images, then "
    "upload_assignments (detect, crop, embed with the published versions, match only the new detections).",
)



def execution(context: dg.SensorEvaluationContext) -> dict:
    """Run config that runs an upload's steps in the run's own process (no second Python start, torch
    import and code load per step) where the job has Dagster's default executor; a code location with
    another executor (Celery, Kubernetes: celery_definitions / k8s_definitions) keeps its own."""
    repo = context.repository_def
    if repo is None or not repo.has_job(ingest_upload_job.name):
        return {}
    if repo.get_job(ingest_upload_job.name).executor_def.name != dg.multi_or_in_process_executor.name:
        return {}
    return {"execution": {"config": {"in_process": {}}}}


# The daemon's sensor loop runs every 5 s (dagster's MIN_INTERVAL_LOOP_TIME); an interval below that makes
# every loop evaluate these sensors (at 5 s exactly, a loop that comes a little early would skip one).
SENSOR_INTERVAL_SECONDS = 2


RETRY_LIMIT = 5  # attempts per batch in all (the first run included)
RETRY_DELAY_SECONDS = 30.0  # before attempt n+1: RETRY_DELAY_SECONDS * 2**(n-1) after attempt n ended
ATTEMPT_TAG = "deer-reid/attempt"


def retry_requests(context: dg.SensorEvaluationContext, now: float | None = None) -> list[dg.RunRequest]:
    """The batches whose import run failed, requested again: the cursor remembers a photo as submitted
    when its run is requested, so a failed run's photos would otherwise never be imported. Attempt
    ``n`` + 1 waits ``RETRY_DELAY_SECONDS * 2**(n-1)`` after attempt ``n`` ended (a database that is
    restarting gets time), at most ``RETRY_LIMIT`` attempts; the run key ``retry:<failed run id>``
    makes each failed run retried once (Dagster skips a run key a sensor already used)."""
    now = time.time() if now is None else now
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=ingest_upload_job.name, statuses=[dg.DagsterRunStatus.FAILURE],
                              tags={"dagster/sensor_name": camera_upload_sensor_name}),
        limit=100,
    )
    requests = []
    for record in records:
        run = record.dagster_run
        attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
        ended = record.end_time or record.update_timestamp.timestamp()
        if attempt >= RETRY_LIMIT:
            context.log.warning(f"upload batch {run.tags.get('deer-reid/upload-batch')}: run {run.run_id} failed "
                                f"{attempt} times; not retried again (re-run it from the UI once fixed)")
            continue
        if now - ended < RETRY_DELAY_SECONDS * 2 ** (attempt - 1):
            continue
        tags = {k: v for k, v in run.tags.items() if k.startswith("deer-reid/")}
        requests.append(dg.RunRequest(
            run_key=f"retry:{run.run_id}", partition_key=run.tags.get("dagster/partition"), run_config=run.run_config,
            tags={**tags, ATTEMPT_TAG: str(attempt + 1), "deer-reid/retry-of": run.run_id}))
    return requests


camera_upload_sensor_name = "camera_upload_sensor"


@dg.sensor(
    name=camera_upload_sensor_name,
    job=ingest_upload_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the upload folder (<upload>/<camera>/<photo>). A photo is submitted as soon as its bytes "
    "say it is whole (a JPEG's segments and end marker, a PNG's IEND), otherwise once it has not changed for "
    "ImageStoreResource.upload_settle_seconds (its age; 3 s by default); either way it must not have changed since "
    "the last evaluation. Submitted photos are remembered in the cursor "
    "and never submitted twice; at most max_files per evaluation (bursts spread over several); names that escape "
    "the folder are refused and logged. Photos are grouped into batches per camera and capture day. A batch whose "
    "import run failed is requested again (backing off, at most 5 attempts). The folder is "
    "ImageStoreResource.upload_dir ($DEER_REID_HOME/store/uploads by default); each tick's skip reason names it and "
    "says whether it exists and what it is waiting for.",
)
def camera_upload_sensor(context: dg.SensorEvaluationContext, image_store: ImageStoreResource) -> dg.SensorResult:
    uploads = image_store.uploads
    if not uploads.is_dir():
        return dg.SensorResult(skip_reason=f"upload folder {uploads} does not exist yet: create it (or set "
                               "ImageStoreResource.upload_dir) and drop photos into <camera>/ folders",
                               cursor=context.cursor)
    result = scan_uploads(uploads, context.cursor, settle_seconds=image_store.upload_settle_seconds,
                          max_files=image_store.upload_max_files_per_tick)
    for name, reason in result.rejected:
        context.log.warning(f"upload refused: {name}: {reason}")
    requests = retry_requests(context) + [
        dg.RunRequest(
            run_key=f"{batch.key}:{batch.fingerprint}",
            partition_key=batch.key,
            run_config={"ops": {"camera_images": {"config": {"source_dir": str(uploads), "files": batch.files}}},
                        **execution(context)},
            tags={"deer-reid/upload-batch": batch.key, "deer-reid/photos": str(len(batch.files)), ATTEMPT_TAG: "1"},
        )
        for batch in result.batches
    ]
    new_keys = sorted({b.key for b in result.batches} - set(context.instance.get_dynamic_partitions(upload_batches.name)))
    skip = None
    if not requests:
        skip = (f"no new stable photos in {uploads} ({result.waiting} still being written, "
                f"{result.deferred} deferred)")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[upload_batches.build_add_request(new_keys)] if new_keys else [],
        cursor=result.cursor,
        skip_reason=skip,
    )


@dg.sensor(
    job=ingest_upload_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the existing system's database: photos its API stored and its worker's detector finished "
    "(processing_status 'completed', detections written) since the cursor become camera_images runs, one per camera "
    "and capture day, each photo once and only once. Starts at the present; does nothing on a stand-alone install.",
)
def existing_system_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    engine = database.get_engine()
    with engine.connect() as conn:
        if not coexistence.adopted(conn):
            return dg.SensorResult(skip_reason="stand-alone install: no adopted existing system (the folder sensor "
                                   "feeds this one)", cursor=context.cursor)
        scan = existing_uploads.scan_finished(conn, context.cursor)
    requests = [
        dg.RunRequest(
            run_key=f"db:{batch.key}:{batch.image_ids[0]}:{len(batch.image_ids)}",
            partition_key=batch.key,
            run_config={"ops": {"camera_images": {"config": {"image_ids": batch.image_ids}}}, **execution(context)},
            tags={"deer-reid/upload-batch": batch.key, "deer-reid/photos": str(len(batch.image_ids)),
                  "deer-reid/source": "existing-system"},
        )
        for batch in scan.batches
    ]
    new_keys = sorted({b.key for b in scan.batches} - set(context.instance.get_dynamic_partitions(upload_batches.name)))
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[upload_batches.build_add_request(new_keys)] if new_keys else [],
        cursor=scan.cursor,
        skip_reason=None if requests else "no newly finished photos",
    )
