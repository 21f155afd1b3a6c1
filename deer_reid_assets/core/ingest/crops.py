"""Cropping detections out of their photos into the image store.

Each detection gets one ``reid_crops`` row: ``ok`` with the crop's path, or ``rejected`` with the
reason (malformed or zero-area box, box outside the photo, too small, unreadable photo). A bad box or
photo never stops the batch. Boxes that overhang the photo are clamped and flagged.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core.ingest.imaging import BoxError, ImageError, clamp_box, crop, load_image
from deer_reid_assets.core.store import crops as crop_store

CROP_VERSION = "1"  # bump when cropping changes (margins, format): crops are redone
MIN_SIDE = 16


@dataclass
class CropReport:
    ok: int = 0
    clamped: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[str, str]] = field(default_factory=list)  # (detection id, reason)


def crop_path(store: Path, detection_id: str) -> Path:
    return store / "crops" / detection_id[:2] / f"{detection_id}.jpg"


def pending_detections(conn: sa.Connection, image_batches: list[str] | None = None) -> list[tuple[str, str, str, dict]]:
    """(detection id, image id, image path, bbox) of valid detections without a crop of this version."""
    return crop_store.uncropped_detections(conn, CROP_VERSION, image_batches)


def make_crops(engine: sa.Engine, store: Path, *, image_batches: list[str] | None = None,
               progress: Callable[[int, int], None] | None = None, chunk_images: int = 50) -> CropReport:
    """Crop every detection that has no crop yet; commits per chunk of photos."""
    with engine.connect() as conn:
        todo = pending_detections(conn, image_batches)
    by_image: dict[tuple[str, str], list[tuple[str, dict]]] = defaultdict(list)
    for det_id, image_id, path, bbox in todo:
        by_image[(image_id, path)].append((det_id, bbox))
    report = CropReport()
    groups = list(by_image.items())
    for start in range(0, len(groups), chunk_images):
        rows = []
        for (_image_id, path), dets in groups[start : start + chunk_images]:
            rows.extend(_crop_image(store, Path(path), dets, report))
        if rows:
            with engine.begin() as conn:
                crop_store.write_crops(conn, rows)
        if progress:
            progress(min(start + chunk_images, len(groups)), len(groups))
    return report


def _reject(report: CropReport, detection_id: str, reason: str) -> dict:
    report.rejected += 1
    kind = reason.split(":")[0] if reason.startswith("photo unreadable") else reason.split(" (")[0]
    report.reasons[kind] = report.reasons.get(kind, 0) + 1
    if len(report.examples) < 10:
        report.examples.append((detection_id, reason))
    return dict(detection_id=detection_id, status="rejected", path=None, width=None, height=None, clamped=False,
                reject_reason=reason, crop_version=CROP_VERSION)


def _crop_image(store: Path, path: Path, dets: list[tuple[str, dict]], report: CropReport) -> list[dict]:
    try:
        img = load_image(path)
    except ImageError as exc:
        return [_reject(report, det_id, f"photo unreadable: {exc}") for det_id, _ in dets]
    rows = []
    for det_id, bbox in dets:
        try:
            box = clamp_box(bbox, img.size, MIN_SIDE)
        except BoxError as exc:
            rows.append(_reject(report, det_id, str(exc)))
            continue
        out = crop_path(store, det_id)
        out.parent.mkdir(parents=True, exist_ok=True)
        crop(img, box).save(out, format="JPEG", quality=95)
        report.ok += 1
        report.clamped += int(box.clamped)
        rows.append(dict(detection_id=det_id, status="ok", path=str(out), width=box.width, height=box.height,
                         clamped=box.clamped, reject_reason=None, crop_version=CROP_VERSION))
    return rows
