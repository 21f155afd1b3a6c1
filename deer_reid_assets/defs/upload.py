"""The upload fast path as an asset: one upload batch (a partition of camera_images) from its photos
to assignments, in the same run as its import (job ``ingest_upload``), without recomputing the
collection. The plain code is ``core/upload_path.py``."""

import time
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from deer_reid_assets.core import upload_path

from .common import OWNERS, md_table, rate
from .embeddings import embedder_settings
from .ingest import camera_images, upload_batches
from .matching import deer_profiles, ensemble_weights
from .placement import gpu_step
from .resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource


class UploadAssignmentsConfig(dg.Config):
    detector_weights: Optional[str] = Field(
        default=None, description="Local ultralytics YOLO .pt checkpoint for photos without detections; unset = none.")
    classes: Optional[list[str]] = Field(default=None, description="Detector class names kept (unset = all).")
    min_confidence: float = Field(default=0.25)
    threshold: float = Field(default=0.40, description="Operating threshold when no tuned threshold applies.")
    top_k: int = Field(default=5, description="Candidates retrieved per detection and model.")
    method: str = Field(default="auto", description="'auto' (as deer_assignments), 'finetuned', 'ensemble' or "
                        "'baseline'.")
    antler_tolerance: Optional[int] = Field(default=0, description="As deer_assignments; null switches it off.")


@dg.asset(
    deps=[camera_images, deer_profiles, ensemble_weights],
    partitions_def=upload_batches,
    group_name="matching",
    kinds={"pytorch", "postgres"},
    **gpu_step(),
    owners=OWNERS,
    code_version="1",
    description="The upload fast path, per upload batch: its photos through the detector (when configured), its "
    "detections cropped, its new crops embedded with the PUBLISHED embedding versions (their own weights and saved "
    "projections: no version staged, nothing refitted or published), and only its new detections matched against "
    "the current profiles with the current matcher settings, written as deer_assignments writes them (run logged, "
    "rollback possible; proposals before cut-over). The rest of the graph is not recomputed for an upload; the "
    "evaluation and the report run nightly or on demand.",
)
def upload_assignments(context: dg.AssetExecutionContext, config: UploadAssignmentsConfig, database: DatabaseResource,
                       image_store: ImageStoreResource, compute: ComputeResource,
                       model_weights: ModelWeightsResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    started = time.perf_counter()
    settings = embedder_settings(compute, model_weights)  # resolves the device: imports torch
    settings_seconds = time.perf_counter() - started
    try:
        report = upload_path.process_batch(
            engine, context.partition_key, image_store.root_path, settings,
            detector_weights=config.detector_weights, detector_classes=config.classes,
            min_confidence=config.min_confidence, log=context.log.warning, method=config.method,
            threshold=config.threshold, top_k=config.top_k, antler_tolerance=config.antler_tolerance,
            run_id=context.run_id)
    except ValueError as exc:  # a published version this deployment cannot rebuild, bad settings
        raise dg.Failure(f"upload batch {context.partition_key}: {exc}") from exc
    report.seconds["import_torch"] = settings_seconds
    for det, reason in report.reject_examples:
        context.log.warning(f"detection {det} rejected: {reason}")
    assigned = report.assignment
    if assigned is not None:
        context.log.info(f"{report.method}: matched {assigned.considered} new detection(s), assigned {assigned.assigned}")
    elif report.skipped:
        context.log.info(report.skipped)
    phases = pd.DataFrame(sorted(report.seconds.items(), key=lambda kv: -kv[1]), columns=["phase", "seconds"])
    return dg.MaterializeResult(metadata={
        "upload_batch": context.partition_key,
        "batch_detections": report.batch_detections,
        "photos_run_through_detector": report.photos_run_through_detector,
        "new_crops": report.new_crops,
        "rejected_crops": report.rejected_crops,
        "embedded_into_published_versions": dg.MetadataValue.json(report.embedded),
        "method": report.method or "none",
        "embedding_versions_and_ensemble_weights": dg.MetadataValue.json(report.models),
        "new_detections_matched": len(report.matched),
        "assigned": assigned.assigned if assigned else 0,
        "assignment_rate": rate(assigned.assignment_rate) if assigned else "n/a",
        "threshold": assigned.threshold if assigned else "n/a",
        "proposals_only": assigned.proposals_only if assigned else False,
        "assignment_run": assigned.run_id if assigned else "none",
        "not_matched_because": report.skipped or "n/a",
        "seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in report.seconds.items()}),
        "phases": md_table(phases),
    })
