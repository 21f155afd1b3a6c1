"""The camera-upload sensor: new photos in the upload folder become import runs, one per batch
(camera x capture day), and automation carries them through crops, embeddings and matching."""

import dagster as dg

from deer_reid_assets.core import coexistence
from deer_reid_assets.core.ingest.uploads import scan_uploads
from deer_reid_assets.core.store import existing_uploads

from .ingest import camera_images, upload_batches
from .resources import DatabaseResource, ImageStoreResource

ingest_upload_job = dg.define_asset_job(
    "ingest_upload",
    selection=[camera_images],
    partitions_def=upload_batches,
    description="Import one batch of uploaded photos (the sensor launches it; automation does the rest).",
)


@dg.sensor(
    job=ingest_upload_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the upload folder (<upload>/<camera>/<photo>). A photo is submitted once its size and "
    "modification time have stayed the same between two evaluations; submitted photos are remembered in the cursor "
    "and never submitted twice; at most max_files per evaluation (bursts spread over several); names that escape "
    "the folder are refused and logged. Photos are grouped into batches per camera and capture day. The folder is "
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
    requests = [
        dg.RunRequest(
            run_key=f"{batch.key}:{batch.fingerprint}",
            partition_key=batch.key,
            run_config={"ops": {"camera_images": {"config": {"source_dir": str(uploads), "files": batch.files}}}},
            tags={"deer-reid/upload-batch": batch.key, "deer-reid/photos": str(len(batch.files))},
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
    minimum_interval_seconds=15,
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
            run_config={"ops": {"camera_images": {"config": {"image_ids": batch.image_ids}}}},
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
