"""The deer-reid code location: ``defs`` is what `dagster dev`, `dg` and the webserver load.

Importing this module stays light: torch, torchvision and ultralytics are imported inside asset
bodies (and the core modules they call), never here.
"""

from __future__ import annotations

import dagster as dg

from deer_reid_assets.defs import (
    antlers,
    automation,
    embeddings,
    evaluation,
    ingest,
    marks,
    matching,
    review,
    sensors,
    training,
    upload,
)
from deer_reid_assets.defs.resources import (
    ComputeResource,
    DatabaseResource,
    ImageStoreResource,
    ModelWeightsResource,
)

ALL_ASSETS = [
    ingest.camera_images,
    ingest.detections,
    ingest.crops,
    embeddings.baseline_embeddings,
    embeddings.multiscale_embeddings,
    embeddings.efficientnet_embeddings,
    training.triplet_dataset,
    training.finetuned_reid_model,
    embeddings.finetuned_embeddings,
    embeddings.published_embeddings,
    matching.ensemble_weights,
    matching.deer_profiles,
    antlers.antler_annotations,
    antlers.antler_detector,
    antlers.antler_features,
    matching.deer_assignments,
    marks.physical_features,
    evaluation.reid_evaluation,
    evaluation.embedding_report,
]

ALL_CHECKS = embeddings.EMBEDDING_CHECKS

# The upload fast path (job ingest_upload, launched by the sensors): one batch from import to assignments.
UPLOAD_ASSETS = [upload.upload_assignments]

# Active learning, beside the graph: the review app's corrections as labelled pairs (not part of the demo's run).
REVIEW_ASSETS = [review.review_labels]

# The deer-specific model: what `deer-reid demo --no-train` leaves out and `deer-reid train` runs ...
TRAINING_ASSETS = [training.triplet_dataset, training.finetuned_reid_model, embeddings.finetuned_embeddings]
# The antler keypoint model trains on annotations a person imported (`deer-reid antlers import`); it is
# launched on purpose (`deer-reid demo` trains it with the training assets), not part of the report's runs.
ANTLER_TRAINING = [antlers.antler_detector]
# ... followed by what a new model changes: published if it beats the matcher, profiles, matching, the report.
AFTER_TRAINING = [embeddings.published_embeddings, matching.deer_profiles, matching.deer_assignments,
                  evaluation.embedding_report]
# From crops already in the database (`deer-reid import-crops`) to the before/after report, without training.
FROM_CROPS = [a for a in ALL_ASSETS if a not in TRAINING_ASSETS + ANTLER_TRAINING and a is not ingest.camera_images]


def graph(*, train: bool) -> list:
    """The whole graph in dependency order, with or without the training assets."""
    return [a for a in ALL_ASSETS if train or a not in TRAINING_ASSETS + ANTLER_TRAINING]

# The whole graph, in dependency order: what `deer-reid demo` and the UI's "materialize all" run.
reid_pipeline_job = dg.define_asset_job(
    "reid_pipeline",
    selection=dg.AssetSelection.assets(*[a for a in ALL_ASSETS if a not in ANTLER_TRAINING]),
    description="Import photos, crop, embed with every model, tune the ensemble, build profiles, assign and evaluate.",
)


def default_resources() -> dict:
    return {
        "database": DatabaseResource(),
        "image_store": ImageStoreResource(),
        "compute": ComputeResource(),
        "model_weights": ModelWeightsResource(),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS + UPLOAD_ASSETS + REVIEW_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[reid_pipeline_job, sensors.ingest_upload_job, review.retrain_from_corrections_job, review.rebuild_profiles_job],
    sensors=[automation.automation_sensor, sensors.camera_upload_sensor, sensors.existing_system_sensor,
             review.retrain_on_corrections_sensor, review.profiles_after_deer_edits_sensor],
    resources=default_resources(),
)
