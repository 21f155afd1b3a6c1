"""The antler keypoint model: ultralytics YOLOv8-pose trained on a YOLO dataset of the stored
annotations (``yolo.write_dataset``).

It starts from ``yolov8n-pose.pt`` when that file is present locally (nothing is downloaded), else
from the model's yaml (``yolov8n-pose.yaml``: random init, and the result says so). Profiles:
``cpu`` (one epoch at 64 px, for tests and the demo: it proves the path, it does not learn) and
``full`` (100 epochs at 640 px, for a GPU). Ultralytics' settings file goes under ``settings_dir``
(not the home directory), it runs offline, and its process-wide patch of ``PIL.Image.open`` is undone.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

PRETRAINED = "yolov8n-pose.pt"
ARCHITECTURE = "yolov8n-pose.yaml"
PROFILES = {
    "cpu": {"epochs": 1, "imgsz": 64, "batch": 4},
    "full": {"epochs": 100, "imgsz": 640, "batch": 16},
}


@dataclass
class TrainResult:
    checkpoint: Path
    start: str  # what it started from: the .pt path or the yaml
    pretrained: bool
    profile: str
    device: str
    metrics: dict[str, float] = field(default_factory=dict)


def _ultralytics(settings_dir: Path):
    settings_dir.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(settings_dir)  # read when ultralytics is first imported
    os.environ.setdefault("YOLO_OFFLINE", "1")
    pil_open = Image.open
    from ultralytics import YOLO

    Image.open = pil_open  # ultralytics would otherwise try to pip-install pi-heif on unreadable files
    return YOLO


def start_point(weights_dir: Path | None) -> tuple[str, bool]:
    """(model to start from, whether it is pretrained)."""
    for folder in [weights_dir] if weights_dir else []:
        candidate = Path(folder) / PRETRAINED
        if candidate.is_file():
            return str(candidate), True
    return ARCHITECTURE, False


def train(data_yaml: Path, out_dir: Path, *, profile: str = "cpu", epochs: int | None = None,
          device: str | None = None, weights_dir: Path | None = None, settings_dir: Path | None = None,
          seed: int = 0) -> TrainResult:
    """Train and copy the best checkpoint to ``out_dir/antler_pose.pt``; metrics from validation."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    YOLO = _ultralytics(Path(settings_dir) if settings_dir else out_dir / "ultralytics_settings")
    import torch

    device = device or ("0" if torch.cuda.is_available() else "cpu")
    start, pretrained = start_point(weights_dir)
    model = YOLO(start, task="pose")
    cfg = dict(PROFILES[profile])
    if epochs is not None:
        cfg["epochs"] = epochs
    results = model.train(data=str(data_yaml), project=str(out_dir / "runs"), name="train", exist_ok=True,
                          device=device, workers=0, seed=seed, deterministic=True, plots=False, verbose=False,
                          amp=device != "cpu", pretrained=pretrained, val=True, **cfg)
    trainer = model.trainer
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    checkpoint = out_dir / "antler_pose.pt"
    shutil.copyfile(best, checkpoint)
    raw = getattr(results, "results_dict", None) or {}
    metrics = {_metric_name(k): float(v) for k, v in raw.items()}
    return TrainResult(checkpoint=checkpoint, start=start, pretrained=pretrained, profile=profile, device=device,
                       metrics=metrics)


def _metric_name(key: str) -> str:
    """'metrics/mAP50-95(P)' -> 'pose_mAP50-95'; '(B)' -> box."""
    key = key.replace("metrics/", "")
    for tag, kind in (("(B)", "box_"), ("(P)", "pose_")):
        if key.endswith(tag):
            return kind + key[: -len(tag)]
    return key
