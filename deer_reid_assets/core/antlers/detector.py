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

from deer_reid_assets.core.threads import torch_threads_kept

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
    os.environ.setdefault("YOLO_VERBOSE", "False")  # its per-batch progress lines would flood the demo's output
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


@torch_threads_kept()
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
    metrics.update(keypoint_error(checkpoint, data_yaml, device=device, imgsz=cfg["imgsz"]))
    return TrainResult(checkpoint=checkpoint, start=start, pretrained=pretrained, profile=profile, device=device,
                       metrics=metrics)


@torch_threads_kept()
def keypoint_error(checkpoint: Path, data_yaml: Path, *, split: str = "val", device: str = "cpu",
                   imgsz: int = 640) -> dict[str, float]:
    """Mean distance between predicted and annotated keypoints, as a fraction of the annotated box's
    diagonal, over the annotated (visibility >= 1) points of each validation buck, matched to the
    predicted animal with the highest box overlap; a buck with no prediction is counted as missed."""
    from deer_reid_assets.core.antlers import yolo

    images, _ = yolo.read_dataset(data_yaml)
    root = Path(data_yaml).parent
    YOLO = _ultralytics(Path(os.environ.get("YOLO_CONFIG_DIR", root / "ultralytics_settings")))
    model = YOLO(str(checkpoint), task="pose")
    errors, bucks, missed = [], 0, 0
    for img in images:
        photo = root / "images" / (img.split or "train") / img.key
        gt = [a for a in img.annotations if a.classification == "buck" and a.points]
        if img.split != split or not gt or not photo.is_file():
            continue
        result = model.predict(str(photo), imgsz=imgsz, device=device, verbose=False, conf=0.001)[0]
        boxes = result.boxes.xywhn.tolist() if result.boxes is not None else []
        kpts = result.keypoints.xyn.tolist() if result.keypoints is not None else []
        for a in gt:
            bucks += 1
            best = max(range(len(boxes)), key=lambda k: _iou(a.box, boxes[k]), default=None)
            if best is None or _iou(a.box, boxes[best]) <= 0:
                missed += 1
                continue
            diag = (a.box[2] ** 2 + a.box[3] ** 2) ** 0.5
            for p in a.points:
                px, py = kpts[best][p.index]
                errors.append(((px - p.x) ** 2 + (py - p.y) ** 2) ** 0.5 / diag)
    out = {"val_bucks": float(bucks), "val_bucks_missed": float(missed)}
    if errors:
        out["keypoint_error"] = float(sum(errors) / len(errors))
    return out


def _iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _metric_name(key: str) -> str:
    """'metrics/mAP50-95(P)' -> 'pose_mAP50-95'; '(B)' -> box."""
    key = key.replace("metrics/", "")
    for tag, kind in (("(B)", "box_"), ("(P)", "pose_")):
        if key.endswith(tag):
            return kind + key[: -len(tag)]
    return key
