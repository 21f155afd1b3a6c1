"""Importing already-cropped, labelled images laid out ``<folder>/<deer name>/<crop>.jpg``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core.ingest import importer as imp
from deer_reid_assets.core.ingest.imaging import exif_summary
from deer_reid_assets.core.ingest.importer import (
    CLASSIFICATIONS,
    REFUSED,
    EntryError,
    ImportReport,
    Progress,
    SidecarError,
    display_path,
)
from deer_reid_assets.core.store import detections as det_store


def iter_crop_folders(directory: Path, report: ImportReport | None = None) -> Iterable[tuple[str, Path]]:
    """(deer name, file) for every image in ``<directory>/<deer name>/...``, by the same symlink rule
    as the upload sensor (refused names go to ``report``)."""
    directory = Path(directory)
    listing = imp._safe_listing(directory, report if report is not None else ImportReport(batch="listing"))
    for seen in listing:
        if seen.camera != "unknown" or "/" in seen.rel:
            yield seen.rel.split("/", 1)[0], directory / seen.rel


def import_crop_folders(engine: sa.Engine, directory: Path, *, sex: str = "unknown", batch: str | None = None,
                        progress: Progress | None = None, chunk: int = 100) -> ImportReport:
    """Import already-cropped, labelled images laid out one sub-folder per individual. Each file
    becomes a photo with one reviewed detection covering it, labelled with its folder's name, plus a
    ground-truth row so the evaluation can score it. A bad file or a folder name the database cannot
    hold costs only its own crops."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise SidecarError(f"{directory}: not a folder")
    if sex not in CLASSIFICATIONS:
        raise SidecarError(f"sex must be one of {sorted(CLASSIFICATIONS)}, got {sex!r}")
    report = ImportReport(batch=batch or f"crops-{directory.name}")
    files = list(iter_crop_folders(directory, report))
    if not files and not report.failures:
        raise SidecarError(f"{directory}: no images found in <folder>/<deer name>/<image> layout")
    loc_cache: dict[str, str] = {}

    def one(conn, name: str, file: Path) -> None:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise EntryError(REFUSED + f"deer folder name {display_path(name)!r} is not valid UTF-8 (rename it)") from None
        admitted = imp._admit(conn, file, report, loc_cache)
        if admitted is None:
            return
        img, sha = admitted
        image_id = imp._insert_image(conn, path=file, camera=None, camera_info=None, timestamp=None,
                                 batch=report.batch, loc_cache=loc_cache, status="completed", error=None,
                                 sha=sha, size=img.size, exif=exif_summary(img))
        report.images_new += 1
        deer_id = imp.deer_id_for_name(conn, name, sex, report)
        detection_id = det_store.insert_detection(
            conn, image_id=image_id, deer_id=deer_id, bbox={"x": 0, "y": 0, "width": img.width, "height": img.height},
            confidence=1.0, classification=sex, is_reviewed=True, is_valid=True,
            reviewed_by="import-crops", reviewed_at=datetime.now(UTC))
        imp._insert_truth(conn, detection_id, {"deer": name, "sex": sex}, source="crop_folders")
        report.detections += 1
        report.labelled += 1
        report.ground_truth += 1

    for start in range(0, len(files), chunk):
        with engine.begin() as conn:
            for name, file in files[start : start + chunk]:
                imp._guarded(conn, report, file, loc_cache, lambda n=name, f=file: one(conn, n, f))
        if progress:
            progress(min(start + chunk, len(files)), len(files))
    return report
