"""Bringing camera photos, detections and labels into the database.

Sidecar format ``deer-reid-detections/1`` (a ``detections.json`` at the root of an image folder)::

    {"format": "deer-reid-detections/1",
     "cameras": [{"name": "cam01", "description": "...", "latitude": 44.1, "longitude": -73.2}],
     "images": [{"file": "images/cam01/cam01_00017.jpg", "camera": "cam01",
                 "timestamp": "2026-10-03T05:41:00+00:00",
                 "detections": [{"bbox": {"x": 120, "y": 200, "width": 180, "height": 140},
                                 "confidence": 0.91, "classification": "buck",
                                 "key": "images/cam01/cam01_00017.jpg#0",   # optional, joins ground truth
                                 "label": "Buck-03"}]}]}                   # optional human label

``file`` is relative to the sidecar's folder; bbox is in pixels (top-left x/y). ``label`` marks a
detection a person has identified: it becomes a reviewed detection of that deer (created by name
when new). An optional ``ground_truth.json`` (``deer-reid-ground-truth/1``: ``{"detections": {key:
{"deer": name, "sex": ..., "antler_points": ...}}}``) is hidden truth used only by evaluation.

Photos are identified by the SHA-256 of their bytes: importing the same file again does nothing.
Unreadable photos are recorded (``images.processing_status = 'failed'`` with the reason) and the
rest of the batch goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from deer_reid_assets.core.ingest.imaging import IMAGE_SUFFIXES, ImageError, exif_summary, load_image, sha256_file
from deer_reid_assets.core.store import schema as t

SIDECAR_FORMAT = "deer-reid-detections/1"
GROUND_TRUTH_FORMAT = "deer-reid-ground-truth/1"
CLASSIFICATIONS = {"buck", "doe", "fawn", "unknown"}


class SidecarError(ValueError):
    """A detections/ground-truth file that does not follow its documented format."""


@dataclass
class ImportReport:
    batch: str
    images_new: int = 0
    images_already_imported: int = 0
    images_failed: int = 0
    images_pending_detection: int = 0
    detections: int = 0
    labelled: int = 0
    ground_truth: int = 0
    deer_created: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)


# --- sidecar files -------------------------------------------------------------------------------
def load_sidecar(path: Path) -> dict[str, Any]:
    """Parse and validate a detections sidecar; SidecarError names the file and the bad entry."""
    data = _load_json(path)
    if data.get("format") != SIDECAR_FORMAT:
        raise SidecarError(f"{path}: 'format' must be {SIDECAR_FORMAT!r}, got {data.get('format')!r}")
    images = data.get("images")
    if not isinstance(images, list):
        raise SidecarError(f"{path}: 'images' must be a list")
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise SidecarError(f"{where}: each image needs a 'file' string")
        _check_relative(entry["file"], where)
        if "timestamp" in entry:
            _parse_time(entry["timestamp"], where)
        if not isinstance(entry.get("detections", []), list):
            raise SidecarError(f"{where}: 'detections' must be a list, got {entry['detections']!r}")
        for j, det in enumerate(entry.get("detections", [])):
            dwhere = f"{where}.detections[{j}]"
            if not isinstance(det, dict) or "bbox" not in det:
                raise SidecarError(f"{dwhere}: each detection needs a 'bbox'")
            cls = det.get("classification", "unknown")
            if cls not in CLASSIFICATIONS:
                raise SidecarError(f"{dwhere}: classification must be one of {sorted(CLASSIFICATIONS)}, got {cls!r}")
            conf = det.get("confidence", 1.0)
            if not isinstance(conf, (int, float)) or not 0.0 <= float(conf) <= 1.0:
                raise SidecarError(f"{dwhere}: confidence must be a number in [0, 1], got {conf!r}")
    return data


def load_ground_truth_file(path: Path) -> dict[str, dict[str, Any]]:
    data = _load_json(path)
    if data.get("format") != GROUND_TRUTH_FORMAT:
        raise SidecarError(f"{path}: 'format' must be {GROUND_TRUTH_FORMAT!r}, got {data.get('format')!r}")
    detections = data.get("detections")
    if not isinstance(detections, dict) or not all(isinstance(v, dict) and "deer" in v for v in detections.values()):
        raise SidecarError(f"{path}: 'detections' must map detection keys to objects with a 'deer' name")
    return detections


def _load_json(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise SidecarError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SidecarError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SidecarError(f"{path}: the top level must be a JSON object")
    return data


def _check_relative(name: str, where: str) -> None:
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts:
        raise SidecarError(f"{where}: file {name!r} must be a path inside the folder (no absolute paths or '..')")


def _parse_time(value: Any, where: str) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise SidecarError(f"{where}: timestamp {value!r} is not ISO 8601") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _exif_time(exif: dict[str, Any]) -> datetime | None:
    raw = exif.get("DateTimeOriginal") or exif.get("DateTime")
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


# --- database helpers ----------------------------------------------------------------------------
def _location_id(conn: sa.Connection, name: str, info: dict[str, Any] | None, cache: dict[str, str]) -> str:
    if name in cache:
        return cache[name]
    row = conn.execute(sa.select(t.locations.c.id).where(t.locations.c.name == name)).first()
    if row is None:
        info = info or {}
        row = conn.execute(
            sa.insert(t.locations)
            .values(name=name, description=info.get("description"), coordinates=_coordinates(info))
            .returning(t.locations.c.id)
        ).first()
    cache[name] = row[0]
    return row[0]


def _coordinates(info: dict[str, Any]) -> dict[str, float] | None:
    """The existing system keeps a camera's position as ``{"lat": .., "lon": ..}``."""
    lat, lon = info.get("latitude"), info.get("longitude")
    if lat is None or lon is None:
        return None
    return {"lat": float(lat), "lon": float(lon)}


def deer_id_for_name(conn: sa.Connection, name: str, sex: str, report: ImportReport | None = None) -> str:
    """The deer row called ``name``, created (with ``sex``) when there is none. A deer of unknown sex
    takes the sex of a later labelled detection that knows it (the result must not depend on which
    sighting happens to come first)."""
    sex = sex if sex in CLASSIFICATIONS else "unknown"
    row = conn.execute(
        sa.select(t.deer.c.id, t.deer.c.sex).where(t.deer.c.name == name).order_by(t.deer.c.id).limit(1)
    ).first()
    if row is not None:
        if row[1] == "unknown" and sex != "unknown":
            conn.execute(sa.update(t.deer).where(t.deer.c.id == row[0]).values(sex=sex))
        return row[0]
    if report is not None:
        report.deer_created += 1
    return conn.execute(sa.insert(t.deer).values(name=name, sex=sex).returning(t.deer.c.id)).scalar_one()


def _already_imported(conn: sa.Connection, sha: str) -> bool:
    return conn.execute(sa.select(t.reid_image_files.c.image_id).where(t.reid_image_files.c.sha256 == sha)).first() is not None


def _make_room_at_path(conn: sa.Connection, path: Path) -> str | None:
    """``images.path`` is unique: a photo whose bytes are new but whose path is already recorded
    either replaces this pipeline's 'failed' record of it (the file was repaired) or is refused
    with the reason returned (another photo is there), instead of failing the whole chunk."""
    i, f = t.images, t.reid_image_files
    row = conn.execute(
        sa.select(i.c.id, i.c.processing_status, f.c.image_id).outerjoin(f, f.c.image_id == i.c.id)
        .where(i.c.path == str(path))
    ).first()
    if row is None:
        return None
    if row[1] == "failed" and row[2] is not None:
        conn.execute(sa.delete(i).where(i.c.id == row[0]))
        return None
    return "another photo is already recorded at this path (was the file changed after it was imported?)"


def _insert_image(conn, *, path: Path, camera: str | None, camera_info, timestamp: datetime | None, batch: str,
                  loc_cache: dict[str, str], status: str, error: str | None, sha: str, size, exif) -> str:
    location = _location_id(conn, camera, camera_info, loc_cache) if camera else None
    if timestamp is None:
        timestamp = _exif_time(exif or {}) or datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    image_id = conn.execute(
        sa.insert(t.images)
        .values(filename=path.name, path=str(path), timestamp=timestamp, location_id=location,
                exif_data=exif or None, processing_status=status, error_message=error)
        .returning(t.images.c.id)
    ).scalar_one()
    if location is not None:  # the existing system keeps a per-camera photo count
        conn.execute(sa.update(t.locations).where(t.locations.c.id == location)
                     .values(image_count=t.locations.c.image_count + 1))
    conn.execute(
        sa.insert(t.reid_image_files).values(
            image_id=image_id, sha256=sha, width=size[0] if size else None, height=size[1] if size else None,
            source_path=str(path), import_batch=batch,
        )
    )
    return image_id


# --- imports -------------------------------------------------------------------------------------
Progress = Callable[[int, int], None]


def import_sidecar_folder(engine: sa.Engine, root: Path, *, batch: str | None = None,
                          ground_truth: Path | None = None, files: list[str] | None = None,
                          progress: Progress | None = None, chunk: int = 100) -> ImportReport:
    """Import the photos, detections, labels (and optional ground truth) described by
    ``root/detections.json``, and any other photo under ``root`` as pending detection. With
    ``files`` (paths relative to ``root``, e.g. an upload batch), only those photos. Photos already
    imported (same bytes) are skipped with their detections."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SidecarError(f"{root}: image folder not found")
    sidecar_path = root / "detections.json"
    sidecar = load_sidecar(sidecar_path) if sidecar_path.exists() else {"images": []}
    truth = load_ground_truth_file(ground_truth) if ground_truth else {}
    cameras = {c["name"]: c for c in sidecar.get("cameras", []) if isinstance(c, dict) and "name" in c}
    report = ImportReport(batch=batch or f"import-{root.name}")
    by_path = {str((root / e["file"]).resolve()): e for e in sidecar["images"]}
    if files is None:
        candidates = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        entries = list(sidecar["images"])
    else:
        for name in files:
            _check_relative(name, f"files entry {name!r}")
        candidates = [root / name for name in files]
        entries = []
    # Photos the sidecar does not list come in without detections ('pending'): the `detections`
    # step runs a detector on them when one is configured.
    listed = {str((root / e["file"]).resolve()) for e in entries}
    for file in candidates:
        key = str(file.resolve())
        if key in listed:
            continue
        if key in by_path:
            entries.append(by_path[key])
        else:
            relative = file.relative_to(root)
            camera = relative.parts[0] if len(relative.parts) > 1 else None
            entries.append({"file": str(relative), "camera": camera, "pending": True})
        listed.add(key)
    loc_cache: dict[str, str] = {}
    for start in range(0, len(entries), chunk):
        with engine.begin() as conn:  # one transaction per chunk: a failure loses nothing already committed
            for entry in entries[start : start + chunk]:
                _import_entry(conn, root, entry, cameras, truth, report, loc_cache)
        if progress:
            progress(min(start + chunk, len(entries)), len(entries))
    return report


def _admit(conn, path: Path, report: ImportReport, loc_cache, *, camera: str | None = None,
           camera_info: dict | None = None, timestamp: datetime | None = None):
    """Hash, de-duplicate and decode one photo -> (image, sha256); None when it is skipped (already
    imported) or unusable (recorded in the report, and as a 'failed' image row when unreadable)."""
    sha = sha256_file(path)
    if _already_imported(conn, sha):
        report.images_already_imported += 1
        return None
    problem = _make_room_at_path(conn, path)
    if problem is None:
        try:
            return load_image(path), sha
        except ImageError as exc:
            problem = str(exc)
            _insert_image(conn, path=path, camera=camera, camera_info=camera_info, timestamp=timestamp,
                          batch=report.batch, loc_cache=loc_cache, status="failed", error=problem, sha=sha,
                          size=None, exif=None)
    report.images_failed += 1
    report.failures.append((str(path), problem))
    return None


def _import_entry(conn, root: Path, entry: dict, cameras: dict, truth: dict, report: ImportReport, loc_cache) -> None:
    path = root / entry["file"]
    if not path.is_file():
        report.images_failed += 1
        report.failures.append((str(path), "file not found"))
        return
    camera = entry.get("camera")
    timestamp = _parse_time(entry["timestamp"], str(path)) if "timestamp" in entry else None
    admitted = _admit(conn, path, report, loc_cache, camera=camera, camera_info=cameras.get(camera), timestamp=timestamp)
    if admitted is None:
        return
    img, sha = admitted
    pending = bool(entry.get("pending"))
    image_id = _insert_image(conn, path=path, camera=camera, camera_info=cameras.get(camera), timestamp=timestamp,
                             batch=report.batch, loc_cache=loc_cache, status="pending" if pending else "completed",
                             error=None, sha=sha, size=img.size, exif=exif_summary(img))
    report.images_new += 1
    report.images_pending_detection += int(pending)
    for det in entry.get("detections", []):
        classification = det.get("classification", "unknown")
        label = det.get("label")
        values: dict[str, Any] = dict(image_id=image_id, bbox=det["bbox"], confidence=float(det.get("confidence", 1.0)),
                                      classification=classification)
        if label:
            values.update(deer_id=deer_id_for_name(conn, str(label), classification, report), is_reviewed=True,
                          is_valid=True, reviewed_by="import", reviewed_at=datetime.now(UTC))
            report.labelled += 1
        detection_id = conn.execute(sa.insert(t.detections).values(**values).returning(t.detections.c.id)).scalar_one()
        report.detections += 1
        key = det.get("key")
        if key and key in truth:
            _insert_truth(conn, detection_id, truth[key], source="ground_truth_file")
            report.ground_truth += 1


def _insert_truth(conn, detection_id: str, truth: dict[str, Any], source: str) -> None:
    attributes = {k: v for k, v in truth.items() if k not in {"deer", "sex", "antler_points"}}
    conn.execute(
        sa.insert(t.reid_ground_truth).values(
            detection_id=detection_id, identity=str(truth["deer"]), sex=truth.get("sex"),
            antler_points=truth.get("antler_points"), attributes=attributes, source=source,
        )
    )


def iter_crop_folders(directory: Path) -> Iterable[tuple[str, Path]]:
    """(deer name, file) for every image in ``<directory>/<deer name>/...``."""
    for sub in sorted(p for p in Path(directory).iterdir() if p.is_dir()):
        for file in sorted(sub.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                yield sub.name, file


def import_crop_folders(engine: sa.Engine, directory: Path, *, sex: str = "unknown", batch: str | None = None,
                        progress: Progress | None = None, chunk: int = 100) -> ImportReport:
    """Import already-cropped, labelled images laid out one sub-folder per individual. Each file
    becomes a photo with one reviewed detection covering it, labelled with its folder's name, plus a
    ground-truth row so the evaluation can score it."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise SidecarError(f"{directory}: not a folder")
    if sex not in CLASSIFICATIONS:
        raise SidecarError(f"sex must be one of {sorted(CLASSIFICATIONS)}, got {sex!r}")
    files = list(iter_crop_folders(directory))
    if not files:
        raise SidecarError(f"{directory}: no images found in <folder>/<deer name>/<image> layout")
    report = ImportReport(batch=batch or f"crops-{directory.name}")
    loc_cache: dict[str, str] = {}
    for start in range(0, len(files), chunk):
        with engine.begin() as conn:
            for name, file in files[start : start + chunk]:
                admitted = _admit(conn, file, report, loc_cache)
                if admitted is None:
                    continue
                img, sha = admitted
                image_id = _insert_image(conn, path=file, camera=None, camera_info=None, timestamp=None,
                                         batch=report.batch, loc_cache=loc_cache, status="completed", error=None,
                                         sha=sha, size=img.size, exif=exif_summary(img))
                report.images_new += 1
                deer_id = deer_id_for_name(conn, name, sex, report)
                detection_id = conn.execute(
                    sa.insert(t.detections)
                    .values(image_id=image_id, deer_id=deer_id, bbox={"x": 0, "y": 0, "width": img.width, "height": img.height},
                            confidence=1.0, classification=sex, is_reviewed=True, is_valid=True,
                            reviewed_by="import-crops", reviewed_at=datetime.now(UTC))
                    .returning(t.detections.c.id)
                ).scalar_one()
                _insert_truth(conn, detection_id, {"deer": name, "sex": sex}, source="crop_folders")
                report.detections += 1
                report.labelled += 1
                report.ground_truth += 1
        if progress:
            progress(min(start + chunk, len(files)), len(files))
    return report
