"""Ingest assets: camera photos in, detections found, crops cut."""

from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from deer_reid_assets.core.ingest import crops as crops_core
from deer_reid_assets.core.ingest import detector, importer
from deer_reid_assets.core.store import existing_uploads, queries

from .automation import DOWNSTREAM, FROM_UPLOADS
from .common import OWNERS, md_table, progress_logger
from .placement import gpu_step
from .resources import ComputeResource, DatabaseResource, ImageStoreResource

GROUP = "ingest"

upload_batches = dg.DynamicPartitionsDefinition(name="upload_batches")
"""One partition per batch of photos: camera x capture day from the upload sensor (e.g. ``cam01__2026-10-03``),
or a name given to a manual import (``deer-reid demo`` uses ``demo``)."""


class CameraImagesConfig(dg.Config):
    source_dir: Optional[str] = Field(
        default=None, description="Folder of camera photos with an optional detections.json; unset = the upload folder."
    )
    files: Optional[list[str]] = Field(
        default=None, description="Only these photos (paths relative to source_dir), as the upload sensor sends them."
    )
    ground_truth: Optional[str] = Field(
        default=None, description="Hidden-truth file for evaluation; unset = <source_dir>/ground_truth.json if present."
    )
    image_ids: Optional[list[str]] = Field(
        default=None, description="Photos the existing system already has (its images ids, as the database sensor "
        "sends them): recorded as this batch instead of reading a folder; its own rows are not changed."
    )


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    code_version="1",
    partitions_def=upload_batches,
    description="Camera photos imported into `images` (identified by content hash: re-importing a file does nothing), "
    "with the detections, human labels and hidden ground truth of their detections.json sidecar. "
    "Unreadable photos are recorded as failed with the reason.",
)
def camera_images(context: dg.AssetExecutionContext, config: CameraImagesConfig, database: DatabaseResource,
                  image_store: ImageStoreResource) -> dg.MaterializeResult:
    if config.image_ids is not None:
        got = existing_uploads.register(database.get_engine(), config.image_ids, context.partition_key)
        return dg.MaterializeResult(metadata={
            "source": "existing system's database (images + detections of its worker)",
            "import_batch": context.partition_key,
            "images_new": got.registered,
            "images_already_imported": got.already,
            "images_unreadable": got.unreadable,
            "detections_of_its_detector": got.detections,
        })
    source = Path(config.source_dir).resolve() if config.source_dir else image_store.uploads
    truth = Path(config.ground_truth) if config.ground_truth else source / "ground_truth.json"
    report = importer.import_sidecar_folder(
        database.get_engine(), source, ground_truth=truth if truth.exists() else None, files=config.files,
        batch=context.partition_key, progress=progress_logger(context, "photos"),
    )
    for path, reason in report.failures[:20]:
        context.log.warning(f"photo rejected: {path}: {reason}")
    return dg.MaterializeResult(metadata={
        "source_dir": dg.MetadataValue.path(str(source)),
        "import_batch": report.batch,
        "images_new": report.images_new,
        "images_already_imported": report.images_already_imported,
        "images_failed": report.images_failed,
        "images_pending_detection": report.images_pending_detection,
        "detections_from_sidecar": report.detections,
        "labelled_detections": report.labelled,
        "ground_truth_rows": report.ground_truth,
        "deer_profiles_created": report.deer_created,
        "failures": md_table(pd.DataFrame(report.failures[:50], columns=["file", "reason"])) if report.failures
        else dg.MetadataValue.text("none"),
    })


class DetectionsConfig(dg.Config):
    detector_weights: Optional[str] = Field(
        default=None, description="Local ultralytics YOLO .pt checkpoint for photos without detections; unset = none."
    )
    classes: Optional[list[str]] = Field(default=None, description="Detector class names kept (unset = all).")
    min_confidence: float = Field(default=0.25)


@dg.asset(
    deps=[camera_images],
    group_name=GROUP,
    kinds={"pytorch", "postgres"},
    owners=OWNERS,
    code_version="1",
    **gpu_step(),
    automation_condition=FROM_UPLOADS,
    description="Deer detections of every photo. Photos that came with a sidecar already have theirs; photos without "
    "one are run through an ultralytics YOLO detector when `detector_weights` is configured.",
)
def detections(context: dg.AssetExecutionContext, config: DetectionsConfig, database: DatabaseResource,
               compute: ComputeResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    with compute.exclusive(engine) if config.detector_weights else nullcontext():
        report = detector.detect_pending(engine, config.detector_weights, classes=config.classes,
                                         min_confidence=config.min_confidence, device=compute.resolve(),
                                         progress=progress_logger(context, "detector"))
    if report.weights is None:
        context.log.info(f"detector: none configured; {report.pending_before} photo(s) without detections stay pending")
    else:
        context.log.info(f"detector: {report.weights} ran on {report.images_processed} photo(s)")
    with engine.connect() as conn:
        counts = queries.detections_by_classification(conn)
    return dg.MaterializeResult(metadata={
        "detector": report.weights or "none configured",
        "photos_pending_before": report.pending_before,
        "photos_run_through_detector": report.images_processed,
        "new_detections_from_detector": report.detections,
        "total_detections": int(counts["detections"].sum()) if len(counts) else 0,
        "by_classification": md_table(counts),
    })


@dg.asset(
    deps=[detections],
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    code_version=crops_core.CROP_VERSION,
    automation_condition=DOWNSTREAM,
    description="One crop per detection in the image store (box clamped to the photo). Malformed, zero-area, "
    "outside or tiny boxes and unreadable photos are rejected with the reason recorded; the batch goes on.",
)
def crops(context: dg.AssetExecutionContext, database: DatabaseResource,
          image_store: ImageStoreResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    report = crops_core.make_crops(engine, image_store.root_path, progress=progress_logger(context, "crops"))
    with engine.connect() as conn:
        totals = queries.crop_totals(conn)
    for det, reason in report.examples:
        context.log.warning(f"detection {det} rejected: {reason}")
    return dg.MaterializeResult(metadata={
        "new_crops": report.ok,
        "new_clamped": report.clamped,
        "new_rejected": report.rejected,
        "total_ok": int(totals.get("ok", 0)),
        "total_rejected": int(totals.get("rejected", 0)),
        "reject_reasons": md_table(pd.DataFrame(sorted(report.reasons.items()), columns=["reason", "count"]))
        if report.reasons else dg.MetadataValue.text("none"),
        "crop_folder": dg.MetadataValue.path(str(image_store.root_path / "crops")),
    })
