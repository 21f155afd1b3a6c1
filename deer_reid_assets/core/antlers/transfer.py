"""Antler annotations between files and the ``antler_keypoints`` table.

Import: each annotated photo is found among the stored photos by file name (exact, or the name
after an exporter's prefix such as Label Studio's ``ab12cd34-`` or ``<hash>-<uuid>_``), each buck
box is matched to the photo's detection it overlaps most (IoU >= 0.5), and its keypoints replace
the detection's (confidence 1: a person's annotation; a buck annotated without points is stored as
"no antlers seen"). Does and fawns carry no keypoints. Whatever cannot be matched is one line in
``errors``; the rest goes on.

Export: every detection with stored keypoints, with the other animals of its photo as boxes, to a
YOLOv8-pose dataset (photos copied, a seeded 80/20 train/val split by file name) or a Label Studio
task list plus its labeling config.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core import classes
from deer_reid_assets.core.antlers import annotations as an
from deer_reid_assets.core.antlers import labelstudio, yolo
from deer_reid_assets.core.store import antler_annotations as q
from deer_reid_assets.core.store import antler_keypoints as kp_store

MIN_IOU = 0.5


@dataclass
class ImportReport:
    source: str
    photos_matched: int = 0
    detections_written: int = 0
    keypoints_written: int = 0
    boxes_without_keypoints: int = 0  # does and fawns
    errors: list[str] = field(default_factory=list)


def read(path: Path, fmt: str) -> tuple[list[an.AnnotatedImage], list[an.FileError]]:
    if fmt == "yolo":
        return yolo.read_dataset(path)
    if fmt == "label-studio":
        return labelstudio.read_export(path)
    raise ValueError(f"format must be 'yolo' or 'label-studio', got {fmt!r}")


def _photo_index(rows: list[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    index: dict[str, list[tuple[str, str]]] = {}
    for image_id, filename, path in rows:
        index.setdefault(Path(filename).stem.lower(), []).append((image_id, path))
    return index


def find_photo(key: str, index: dict[str, list[tuple[str, str]]]) -> tuple[str, str]:
    stem = Path(key).stem.lower()
    starts = [0] + [i + 1 for i, ch in enumerate(stem) if ch in "_-"]
    for start in starts:
        hits = index.get(stem[start:])
        if hits and len(hits) == 1:
            return hits[0]
        if hits:
            raise ValueError(f"{len(hits)} stored photos are named {stem[start:]!r}")
    raise ValueError("no stored photo with this name")


def _iou(a: dict, b: dict) -> float:
    ax2, ay2, bx2, by2 = a["x"] + a["width"], a["y"] + a["height"], b["x"] + b["width"], b["y"] + b["height"]
    inter = max(0.0, min(ax2, bx2) - max(a["x"], b["x"])) * max(0.0, min(ay2, by2) - max(a["y"], b["y"]))
    union = a["width"] * a["height"] + b["width"] * b["height"] - inter
    return inter / union if union > 0 else 0.0


def import_annotations(engine: sa.Engine, path: Path, fmt: str) -> ImportReport:
    images, file_errors = read(path, fmt)
    report = ImportReport(source=f"{q.ANNOTATION_PREFIX}{fmt}", errors=[str(e) for e in file_errors])
    with engine.connect() as conn:
        index = _photo_index(q.photos(conn))
    for img in images:
        try:
            image_id, photo_path = find_photo(img.key, index)
            width, height = img.width, img.height
            if not (width and height):
                with Image.open(photo_path) as im:
                    width, height = im.size
        except (ValueError, OSError) as e:
            report.errors.append(f"{img.key}: {e}")
            continue
        report.photos_matched += 1
        with engine.begin() as conn:
            dets = q.detections_of(conn, [image_id])[image_id]
            for n, a in enumerate(img.annotations, start=1):
                if a.classification != "buck":
                    report.boxes_without_keypoints += 1
                    continue
                cx, cy, w, h = a.box
                box = {"x": (cx - w / 2) * width, "y": (cy - h / 2) * height, "width": w * width, "height": h * height}
                scored = sorted(((_iou(box, bbox), det) for det, bbox, _ in dets), reverse=True)
                if not scored or scored[0][0] < MIN_IOU:
                    best = f"best IoU {scored[0][0]:.2f}" if scored else "the photo has no detections"
                    report.errors.append(f"{img.key}: buck {n} matches no detection ({best})")
                    continue
                points = an.to_pixels(a.points, width, height)
                report.keypoints_written += kp_store.write(conn, scored[0][1], points, model_version=report.source,
                                                           notes=f"imported from {Path(path).name}")
                report.detections_written += 1
    return report


def _split(filename: str) -> str:
    return "val" if int(hashlib.sha256(filename.encode()).hexdigest(), 16) % 5 == 0 else "train"


def export_annotations(engine: sa.Engine, out: Path, fmt: str, *, annotations_only: bool = False
                       ) -> tuple[Path, int]:
    """Write the stored keypoints (only a person's annotations: ``annotations_only``); returns
    (the dataset's main file, number of photos)."""
    if fmt not in ("yolo", "label-studio"):
        raise ValueError(f"format must be 'yolo' or 'label-studio', got {fmt!r}")
    out = Path(out)
    with engine.connect() as conn:
        rows = q.keypointed_detections(conn, annotations_only=annotations_only)
        by_image: dict[str, dict] = {}
        for r in rows:
            by_image.setdefault(r["image_id"], r)
        boxes = q.detections_of(conn, list(by_image))
        points = kp_store.read(conn, [r["detection_id"] for r in rows])
    items = []
    for image_id, r in by_image.items():
        with Image.open(r["path"]) as im:
            width, height = im.size
        anns = []
        for det, bbox, cls in boxes[image_id]:
            sex = classes.sex_of(cls)
            if sex not in an.CLASSES:
                continue
            box = ((bbox["x"] + bbox["width"] / 2) / width, (bbox["y"] + bbox["height"] / 2) / height,
                   bbox["width"] / width, bbox["height"] / height)
            pts = [an.RelPoint(p.index, p.x / width, p.y / height, p.visibility)
                   for p in points.get(det, []) if p.visibility > 0] if sex == "buck" else []
            anns.append(an.Annotation(sex, box, pts))
        items.append((an.AnnotatedImage(r["filename"], anns, split=_split(r["filename"]), width=width, height=height),
                      Path(r["path"])))
    if items and not any(i.split == "val" for i, _ in items) and len(items) > 1:
        items[-1][0].split = "val"
    if fmt == "yolo":
        return yolo.write_dataset(out, items), len(items)
    out.mkdir(parents=True, exist_ok=True)
    (out / "labeling_config.xml").write_text(labelstudio.labeling_config())
    tasks = out / "tasks.json"
    tasks.write_text(json.dumps(labelstudio.to_tasks([i for i, _ in items]), indent=1))
    return tasks, len(items)
