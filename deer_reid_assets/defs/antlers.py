"""Antler assets: a person's keypoint annotations imported, the keypoint model trained on them, and
the antler features (per buck detection, aggregated per antler season onto the deer table) that
matching uses."""

import time
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from .automation import ANTLER_FEATURES, DOWNSTREAM
from .common import OWNERS, core_errors, figure, md_table
from .ingest import detections
from .placement import gpu_step
from .resources import ComputeResource, DatabaseResource, ImageStoreResource

GROUP = "antlers"


class AntlerAnnotationsConfig(dg.Config):
    path: Optional[str] = Field(default=None, description="A Label Studio JSON export (or a folder of them), or a "
                                "YOLOv8-pose data.yaml (or its folder); unset = <upload folder>/antler_annotations.")


@dg.asset(
    deps=[detections],
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    code_version="1",
    automation_condition=DOWNSTREAM,
    description="A person's antler keypoint annotations (Label Studio export or YOLOv8-pose dataset, as "
    "`deer-reid antlers import` reads them) matched to the stored photos and detections and written to "
    "antler_keypoints (confidence 1, logged as annotation:<format>); one line per file, photo or box not used. "
    "Nothing to do when there are no annotation files.",
)
def antler_annotations(context: dg.AssetExecutionContext, config: AntlerAnnotationsConfig,
                       database: DatabaseResource, image_store: ImageStoreResource) -> dg.MaterializeResult:
    from pathlib import Path

    from deer_reid_assets.core.antlers.transfer import import_annotations

    path = Path(config.path) if config.path else image_store.uploads / "antler_annotations"
    if not path.exists():
        return dg.MaterializeResult(metadata={"source": str(path), "imported": f"nothing: {path} does not exist"})
    fmt = "yolo" if path.suffix in (".yaml", ".yml") or (path / "data.yaml").is_file() else "label-studio"
    with core_errors():
        report = import_annotations(database.get_engine(), path, fmt)
    for line in report.errors[:20]:
        context.log.warning(f"not imported: {line}")
    return dg.MaterializeResult(metadata={
        "source": str(path), "format": fmt, "photos_matched": report.photos_matched,
        "buck_detections_annotated": report.detections_written, "keypoints": report.keypoints_written,
        "not_imported": len(report.errors),
        "not_imported_first": "\n".join(report.errors[:20]) or "none",
    })


class AntlerDetectorConfig(dg.Config):
    profile: str = Field(default="auto", description="'auto' (full on CUDA, cpu otherwise), 'full' or 'cpu'.")
    epochs: Optional[int] = Field(default=None, description="Override the profile's epochs.")
    weights_dir: Optional[str] = Field(default=None, description="Folder holding yolov8n-pose.pt (else the yaml).")


@dg.asset(
    deps=[antler_annotations],
    group_name=GROUP,
    kinds={"pytorch", "ultralytics"},
    owners=OWNERS,
    code_version="1",
    **gpu_step(),
    description="YOLOv8-pose (16 antler keypoints, classes buck/doe/fawn) trained on the annotations stored in "
    "antler_keypoints (imported with `deer-reid antlers import`, never the model's own predictions), from "
    "yolov8n-pose.pt when present locally else from yolov8n-pose.yaml (random init, said in the metadata). "
    "Profiles: cpu (1 epoch at 64 px: proves the path; the demo's) and full (100 epochs at 640 px, for a GPU). The "
    "checkpoint "
    "is versioned in reid_antler_models with box/pose mAP and the per-keypoint error on the validation photos.",
)
def antler_detector(context: dg.AssetExecutionContext, config: AntlerDetectorConfig, database: DatabaseResource,
                    image_store: ImageStoreResource, compute: ComputeResource) -> dg.MaterializeResult:
    from pathlib import Path

    from deer_reid_assets.core.antlers.training import train_from_annotations

    engine = database.get_engine()
    device = compute.resolve()
    profile = config.profile if config.profile != "auto" else ("full" if device.startswith("cuda") else "cpu")
    started = time.perf_counter()
    with core_errors(), compute.exclusive(engine):
        model = train_from_annotations(engine, image_store.artifacts / "antler_models", profile=profile,
                                       epochs=config.epochs, device="0" if device.startswith("cuda") else "cpu",
                                       weights_dir=Path(config.weights_dir) if config.weights_dir else None)
    r = model.result
    context.log.info(f"antler model {model.version} from {r.start} ({'pretrained' if r.pretrained else 'random init'})")
    return dg.MaterializeResult(metadata={
        "model_version": model.version,
        "checkpoint": dg.MetadataValue.path(str(r.checkpoint)),
        "started_from": r.start if r.pretrained else f"{r.start} (random init, NOT pretrained)",
        "profile": profile,
        "device": r.device,
        "train_photos": model.train_photos,
        "val_photos": model.val_photos,
        "train_seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 1)),
        "metrics": md_table(pd.DataFrame(sorted(r.metrics.items()), columns=["metric", "value"])),
        **{k: figure(v) for k, v in r.metrics.items() if "mAP" in k or k == "keypoint_error"},
    })


class AntlerFeaturesConfig(dg.Config):
    min_confidence: float = Field(default=0.5, description="A tine counts when seen with at least this confidence.")
    predict: bool = Field(default=True, description="Run the newest registered keypoint model on the buck "
                          "detections no person annotated (their keypoints then come from the model).")


@dg.asset(
    deps=[antler_annotations, antler_detector],
    group_name=GROUP,
    kinds={"pytorch", "postgres"},
    owners=OWNERS,
    code_version="2",
    **gpu_step(),
    automation_condition=ANTLER_FEATURES,
    description="The newest registered keypoint model (reid_antler_models; none: annotations only) predicts the 16 "
    "points of every buck detection no person annotated (stored in antler_keypoints with the model's version and "
    "confidences). Then per buck detection with keypoints: points per side (tines seen with visibility >= 1 and "
    "confidence >= min_confidence, plus the beam), total, inside spread / head size, typical or not, by antler "
    "season of the photo (velvet / hard / shed). Per deer, from its labelled detections, the count per season; the "
    "newest season's goes to deer.antler_points / antler_description, every season to physical_features.",
)
def antler_features(context: dg.AssetExecutionContext, config: AntlerFeaturesConfig, database: DatabaseResource,
                    image_store: ImageStoreResource, compute: ComputeResource) -> dg.MaterializeResult:
    from deer_reid_assets.core.antlers.profiles import write_deer_columns
    from deer_reid_assets.core.store import antler_models

    engine = database.get_engine()
    model = antler_models.latest(engine) if config.predict else None
    predicted = "off" if not config.predict else "no keypoint model registered: annotations only"
    if model is not None:
        from deer_reid_assets.core.antlers.predict import predict_keypoints

        device = compute.resolve()
        started = time.perf_counter()
        with core_errors(), compute.exclusive(engine):
            done = predict_keypoints(engine, model, device="0" if device.startswith("cuda") else "cpu",
                                     settings_dir=image_store.artifacts / "antler_models" / "ultralytics_settings")
        start = "pretrained" if model["pretrained"] else "random init, NOT pretrained"
        predicted = (f"model {done['model_version']} ({start}): {done['with_keypoints']} of {done['detections']} "
                     f"buck detections without annotations got keypoints ({time.perf_counter() - started:.0f} s)")
        context.log.info(predicted)
    with core_errors():
        summary = write_deer_columns(engine, min_confidence=config.min_confidence)
    dets = summary["detections"]
    sample = pd.DataFrame([{"detection": d.detection_id[:8], "season": d.season.label, "phase": d.season.phase,
                            "left": d.features.left_points, "right": d.features.right_points,
                            "confident": d.features.confident, "description": d.features.description()}
                           for d in dets[:40]])
    deer = pd.DataFrame([{"deer": r["deer_id"][:8], "antler_points": r["antler_points"],
                          "description": r["antler_description"]} for r in summary["rows"][:40]])
    return dg.MaterializeResult(metadata={
        "predictions": predicted,
        "buck_detections_with_keypoints": summary["buck_detections"],
        "confidently_counted": summary["confident"],
        "deer_profiles": summary["deer_profiles"],
        "deer_with_antler_points": summary["deer_with_points"],
        "detections": md_table(sample) if len(sample) else "none",
        "deer": md_table(deer) if len(deer) else "none",
    })
