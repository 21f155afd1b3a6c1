"""The antler keypoint model trains for one tiny epoch from the yaml on CPU (random init, offline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deer_reid_assets.core.antlers import detector, yolo
from deer_reid_assets.core.antlers.annotations import AnnotatedImage, Annotation, RelPoint


def tiny_dataset(tmp_path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    src = tmp_path / "photos"
    src.mkdir()
    items = []
    for k in range(n):
        photo = src / f"p{k}.jpg"
        Image.fromarray((rng.random((48, 64, 3)) * 255).astype("uint8")).save(photo)
        pts = [RelPoint(i, 0.3 + 0.02 * i, 0.3 + 0.01 * i, 2 if i % 3 else 1) for i in range(16)]
        items.append((AnnotatedImage(photo.name, [Annotation("buck", (0.5, 0.5, 0.6, 0.6), pts)],
                                     split="train" if k < n - 2 else "val"), photo))
    return yolo.write_dataset(tmp_path / "dataset", items)


def test_one_tiny_epoch_from_the_yaml_on_cpu(tmp_path, monkeypatch):
    data = tiny_dataset(tmp_path)
    pil_open = Image.open
    threads = torch.get_num_threads()
    torch.set_num_threads(5)  # ultralytics sets min(8, cores - 1) for the whole process: 5 only on 6 cores
    try:
        result = detector.train(data, tmp_path / "model", profile="cpu", device="cpu", weights_dir=tmp_path)
        assert torch.get_num_threads() == 5  # restored: the run's later model steps keep their threads
    finally:
        torch.set_num_threads(threads)
    assert result.start == "yolov8n-pose.yaml" and result.pretrained is False
    assert result.checkpoint.is_file() and result.checkpoint.stat().st_size > 1_000_000
    assert {"box_mAP50-95", "pose_mAP50-95", "val_bucks", "val_bucks_missed"} <= set(result.metrics)
    assert result.metrics["val_bucks"] == 2.0
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("box_mAP50-95", "pose_mAP50-95"))
    assert Image.open is pil_open  # ultralytics' process-wide patch undone
    assert (tmp_path / "model" / "ultralytics_settings").is_dir()
    ckpt = torch.load(result.checkpoint, map_location="cpu", weights_only=False)
    assert list(ckpt["model"].kpt_shape) == [16, 3]


def test_a_local_pretrained_checkpoint_is_preferred_and_nothing_else_is_fetched(tmp_path):
    assert detector.start_point(tmp_path) == ("yolov8n-pose.yaml", False)
    assert detector.start_point(None) == ("yolov8n-pose.yaml", False)
    (tmp_path / "yolov8n-pose.pt").write_bytes(b"x")
    assert detector.start_point(tmp_path) == (str(tmp_path / "yolov8n-pose.pt"), True)
