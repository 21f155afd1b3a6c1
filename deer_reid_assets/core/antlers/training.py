"""Train the antler keypoint model on the stored annotations and register the checkpoint."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
import yaml

from deer_reid_assets.core.antlers import detector, transfer, yolo
from deer_reid_assets.core.store import antler_models


@dataclass
class AntlerModel:
    version: str
    result: detector.TrainResult
    train_photos: int
    val_photos: int


def train_from_annotations(engine: sa.Engine, work_dir: Path, *, profile: str = "cpu", epochs: int | None = None,
                           device: str | None = None, weights_dir: Path | None = None) -> AntlerModel:
    """Export a person's annotations (not model predictions) as a YOLOv8-pose dataset, train, register."""
    work_dir = Path(work_dir)
    data, n = transfer.export_annotations(engine, work_dir / "dataset", "yolo", annotations_only=True)
    if n < 2:
        raise ValueError(f"{n} annotated photo(s) stored: import at least 2 (`deer-reid antlers import`) to train")
    images, _ = yolo.read_dataset(data)
    counts = {s: sum(i.split == s for i in images) for s in ("train", "val")}
    digest = hashlib.sha256(yaml.safe_dump(sorted((i.key, i.split) for i in images)).encode()).hexdigest()[:10]
    result = detector.train(data, work_dir / f"model-{digest}-{profile}", profile=profile, epochs=epochs,
                            device=device, weights_dir=weights_dir, settings_dir=work_dir / "ultralytics_settings")
    version = antler_models.register(engine, checkpoint=result.checkpoint, started_from=result.start,
                                     pretrained=result.pretrained, profile=profile, device=result.device,
                                     train_photos=counts["train"], val_photos=counts["val"], metrics=result.metrics)
    return AntlerModel(version, result, counts["train"], counts["val"])
