"""Training assets: the triplet dataset (a versioned manifest) and the deer-specific ReID model."""

import hashlib
import json
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from deer_reid_assets.core.evaluation import protocol as evaluation
from deer_reid_assets.core.reid import triplet_data
from deer_reid_assets.core.review import labels as review_labels
from deer_reid_assets.core.store import reid_models as training_store

from .common import OWNERS, figure, md_image, md_table
from .ingest import crops
from .placement import gpu_step
from .resources import (
    ComputeResource,
    DatabaseResource,
    ImageStoreResource,
    ModelWeightsResource,
)

GROUP = "training"
MIN_VALIDATION = 40  # below this many val crops, the manifest's test crops join the validation


class TripletDatasetConfig(dg.Config):
    seed: int = Field(default=0, description="Seed of the 80/10/10 split.")
    held_out_identity_fraction: float = Field(default=0.0, description="Identities held out whole into test.")


@dg.asset(
    deps=[crops],
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    code_version="1",
    description="The training manifest: labelled (human-reviewed) detections with crops, split 80/10/10 "
    "train/val/test by a seeded hash (no detection in two splits), minus the evaluation split's val/test queries so "
    "the before/after report scores the model on detections it never saw; optionally whole identities held out. "
    "Versioned in the database (reid_training_manifests / reid_training_items). Detections a person confirmed, "
    "reassigned or gave a new deer in the review app are labelled, so they are in the next manifest.",
)
def triplet_dataset(context: dg.AssetExecutionContext, config: TripletDatasetConfig,
                    database: DatabaseResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    with engine.connect() as conn:
        labelled = evaluation.labelled_set(conn)
    evaluation.stored_split(engine, labelled)  # the evaluation split exists before it is excluded
    manifest = triplet_data.build_manifest(engine, seed=config.seed,
                                           held_out_identity_fraction=config.held_out_identity_fraction)
    with engine.connect() as conn:
        corrected = {p.detection_id for p in review_labels.review_pairs(conn) if p.positive}
        confused = review_labels.confusers(conn)
        evaluation_queries = set(evaluation.query_detections(conn))
    in_manifest = {i["detection_id"] for i in manifest.items if i["split"] == "train"} & corrected
    stats = manifest.stats
    single = stats["single_detection_identities_in_train"]
    if single:
        context.log.warning(f"{len(single)} identities have one training detection and cannot form positives")
    histogram = pd.DataFrame(sorted(stats["detections_per_identity_histogram"].items()),
                             columns=["detections per identity", "identities"])
    return dg.MaterializeResult(metadata={
        "manifest_version": manifest.version,
        "identities": stats["identities"],
        "detections_per_split": dg.MetadataValue.json(stats["detections"]),
        "identities_per_split": dg.MetadataValue.json(stats["identities_per_split"]),
        "single_detection_identities_in_train": len(single),
        "review_corrections_included": len(in_manifest),
        "review_corrections_kept_for_evaluation": len(corrected & evaluation_queries),
        "confused_pairs_from_review": sum(len(v) for v in confused.values()) // 2,
        "per_identity_histogram": md_table(histogram),
    })


class TrainingRunConfig(dg.Config):
    profile: str = Field(default="auto", description="'auto' (full on CUDA, cpu profile on CPU), 'full' or 'cpu'.")
    epochs: Optional[int] = Field(default=None, description="Override the profile's epochs.")
    image_size: Optional[int] = None
    arch: Optional[str] = Field(default=None, description="'resnet18', 'resnet34' or 'resnet50'.")
    head: Optional[str] = Field(default=None, description="'bnneck' (softmax ID loss) or 'arcface' (sub-center).")
    last_stride: Optional[int] = None
    p: Optional[int] = Field(default=None, description="Identities per batch.")
    k: Optional[int] = Field(default=None, description="Crops per identity per batch.")
    margin: Optional[float] = None
    id_weight: Optional[float] = None
    triplet_weight: Optional[float] = None
    optimizer: Optional[str] = Field(default=None, description="'adam', 'adamw' or 'sgd'.")
    lr: Optional[float] = None
    batches_per_epoch: Optional[int] = None
    val_every: Optional[int] = Field(default=None, description="Validate (and checkpoint) every this many epochs, "
                                     "and after the last.")
    flip: Optional[bool] = Field(default=None, description="Horizontal flips (off: a flipped flank is a fake one).")
    num_workers: Optional[int] = None


def train_config(run: TrainingRunConfig, device: str, weights: str, seed: int):
    from deer_reid_assets.core.reid.config import TrainConfig

    profile = run.profile if run.profile != "auto" else ("full" if device.startswith("cuda") else "cpu")
    overrides = {k: v for k, v in run.model_dump().items() if k != "profile" and v is not None}
    try:
        return TrainConfig.profile(profile, **overrides, backbone_weights=weights, seed=seed)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from None


@dg.asset(
    deps=[triplet_dataset],
    group_name=GROUP,
    kinds={"pytorch"},
    owners=OWNERS,
    code_version="2",
    **gpu_step(),
    description="The deer-specific re-ID model (Bag-of-Tricks recipe): a ResNet (50 on a GPU, 18 in the CPU profile; "
    "ImageNet weights when cached, else seeded random) with last stride 1 and a BN-neck, trained with an ID loss "
    "(label smoothing, bias-free classifier or sub-center ArcFace) on the BN-neck feature plus batch-hard triplet "
    "loss on the pre-BN feature, P x K batches, Adam with warm-up + cosine decay, no flips. Each epoch records the "
    "loss terms, validation rank-1/mAP, same/different-deer cosines and the top principal component's share; the "
    "collapse guard marks a run that did not beat the untrained network (or whose different deer look alike) "
    "`collapsed`, and a collapsed model is never used. The best checkpoint is a versioned artefact (reid_models); "
    "an interrupted run resumes from its last epoch. Deer a person's corrections say the matcher confused "
    "(review_labels' hard negatives) are drawn into the same batches, where batch-hard mining sees them.",
)
def finetuned_reid_model(context: dg.AssetExecutionContext, config: TrainingRunConfig, database: DatabaseResource,
                         image_store: ImageStoreResource, compute: ComputeResource,
                         model_weights: ModelWeightsResource) -> dg.MaterializeResult:
    from deer_reid_assets.core.evaluation.plots import training_curve_plot
    from deer_reid_assets.core.reid import trainer

    engine = database.get_engine()
    manifest_version = training_store.latest_manifest_version(engine)
    if manifest_version is None:
        raise dg.Failure("materialize triplet_dataset first")
    manifest = triplet_data.load_manifest(engine, manifest_version)
    device = compute.resolve()
    cfg = train_config(config, device, model_weights.weights, model_weights.seed)
    with engine.connect() as conn:  # confirmed hard negatives from the review app share batches
        confusers = review_labels.confusers(conn)
    trained_ids = {identity for _, identity in manifest.split("train")}
    confusers = {k: [v for v in vs if v in trained_ids] for k, vs in confusers.items() if k in trained_ids}
    confusers = {k: vs for k, vs in confusers.items() if vs}
    run_id = hashlib.sha256(json.dumps([manifest_version, cfg.to_json(), confusers],
                                       sort_keys=True).encode()).hexdigest()[:10]
    out_dir = image_store.artifacts / "models" / f"{manifest_version}-{run_id}"
    train_items, val_items = manifest.split("train"), manifest.split("val")
    gallery = train_items if {i for _, i in val_items} & {i for _, i in train_items} else None
    if gallery is not None:
        context.log.info(f"validation: {len(val_items)} val queries retrieved from the {len(train_items)} training "
                         "crops (the deer's profiles in use); the report's test queries are never trained on")
    else:
        if len(val_items) < MIN_VALIDATION or not _has_pair(val_items):  # too few to tell learning from noise
            val_items = val_items + manifest.split("test")
            context.log.warning(f"the val split has {len(val_items)} crops: validating on val + test of the "
                                "manifest (the before/after report scores on the evaluation split's queries, "
                                "never trained on)")
        if not _has_pair(val_items):
            raise dg.Failure(f"manifest {manifest_version} has too few labelled detections to validate on: label "
                             "more detections (no deer has two crops in val + test)")

    context.log.info(f"training {cfg.arch} at {cfg.image_size} px on {device}: {len(train_items)} train / "
                     f"{len(val_items)} val crops of manifest {manifest_version}; checkpoints in {out_dir}")

    def report(epoch) -> None:
        context.log.info(epoch.describe(cfg.epochs))

    with compute.exclusive(engine):
        result = trainer.train(train_items, val_items, cfg, out_dir, device=device,
                               manifest_version=manifest_version, callbacks=[report], confusers=confusers,
                               val_gallery=gallery)
    history = result.history_frame()
    guard = result.guard()
    version = training_store.register_model(
        engine, manifest_version=manifest_version, checkpoint=result.checkpoint, config=cfg.to_json(),
        history=json.loads(history.to_json(orient="records")), best_val_map=result.best_val_mAP, device=device,
        status=result.status, guard=guard)
    (context.log.warning if result.status == "collapsed" else context.log.info)(result.guard_message)
    trained = history[history["epoch"] > 0]
    return dg.MaterializeResult(metadata={
        "model_version": version,
        "status": result.status,
        "guard": result.guard_message,
        "untrained_val_rank1": figure(guard["untrained"]["val_rank1"]),
        "best_val_rank1": figure(result.best_val_rank1),
        "best_val_mAP": figure(result.best_val_mAP),
        "best_epoch": result.best_epoch,
        "checkpoint": dg.MetadataValue.path(str(result.checkpoint)),
        "manifest_version": manifest_version,
        "hard_negative_pairs": sum(len(v) for v in confusers.values()) // 2,
        "confusers": dg.MetadataValue.json(confusers),
        "device": device,
        "weights": result.backbone_weights.get("description", ""),
        "config": dg.MetadataValue.json(cfg.to_json()),
        "stopped_early": result.stopped_early,
        "resumed_from_epoch": result.resumed_from if result.resumed_from is not None else "no",
        "images_per_second": figure(trained["images_per_s"].mean()) if len(trained) else 0.0,
        "history": md_table(history),
        "curves": md_image(training_curve_plot(history), "loss terms, validation figures and pair cosines per epoch"),
    })


def _has_pair(items: list[tuple[str, str]]) -> bool:
    identities = [identity for _, identity in items]
    return any(identities.count(i) > 1 for i in set(identities))
