"""Bringing camera photos, detections and labels into the database (formats: :mod:`.sidecar`).

Photos are identified by the SHA-256 of their bytes: importing the same file again does nothing.
One bad item costs only itself: an unreadable photo, a bad sidecar entry or a value the database
refuses is recorded (``images.processing_status = 'failed'`` with the reason, or only in the report
when even its name cannot be stored) and the rest of the batch goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from deer_reid_assets.core.ingest.imaging import (
    IMAGE_SUFFIXES,
    BoxError,
    ImageError,
    exif_summary,
    load_image,
    sha256_file,
)
from deer_reid_assets.core.ingest.safe_paths import Seen, link_problem, walk_photos
from deer_reid_assets.core.ingest.sidecar import (  # noqa: F401 - re-exported: the importer's public names
    CLASSIFICATIONS,
    GROUND_TRUTH_FORMAT,
    SIDECAR_FORMAT,
    Sidecar,
    SidecarError,
    camera_fields,
    exif_time,
    load_ground_truth_file,
    load_sidecar,
    too_long,
)
from deer_reid_assets.core.ingest.sidecar import check_relative as _check_relative
from deer_reid_assets.core.ingest.sidecar import parse_time as _parse_time
from deer_reid_assets.core.store import detections as det_store
from deer_reid_assets.core.store import photos
from deer_reid_assets.core.store import schema as t

REFUSED = "entry refused: "
"""Prefix of a failed photo's reason when the photo's bytes are fine but its entry is not (a bad sidecar
entry, a name too long for the database): the next import of that photo tries again."""


class EntryError(ValueError):
    """One photo (or its entry) that cannot be imported; only it is lost, the batch goes on."""


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

    def _counters(self) -> tuple:
        return (self.images_new, self.images_already_imported, self.images_failed, self.images_pending_detection,
                self.detections, self.labelled, self.ground_truth, self.deer_created, len(self.failures))

    def _restore(self, saved: tuple) -> None:
        (self.images_new, self.images_already_imported, self.images_failed, self.images_pending_detection,
         self.detections, self.labelled, self.ground_truth, self.deer_created, n) = saved
        del self.failures[n:]


def display_path(path: Path | str) -> str:
    """``path`` as text PostgreSQL can store: undecodable bytes of a file name shown as ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


# --- database helpers ----------------------------------------------------------------------------
def _get_or_create(conn: sa.Connection, name: str, find: Callable[[sa.Connection], Any],
                   create: Callable[[sa.Connection], Any]) -> tuple[Any, bool]:
    """(row id, created): the row ``find`` sees, else made by ``create`` in a short transaction of its
    own under an advisory lock on ``name``, so two imports running at once never create the same row
    twice (the loser waits, then finds and reuses the winner's row). Committed at once: a chunk rolled
    back later leaves at most an unused deer/camera row, never a duplicate."""
    found = find(conn)
    if found is not None:
        return found, False
    with conn.engine.begin() as own:
        photos.lock_name(own, name)
        found = find(own)
        if found is not None:
            return found, False
        return create(own), True


def _location_id(conn: sa.Connection, name: str, info: dict[str, Any] | None, cache: dict[str, str]) -> str:
    if name in cache:
        return cache[name]
    if reason := too_long(name, t.locations.c.name, "camera name"):
        raise EntryError(REFUSED + reason)
    info = info or {}

    def create(c):
        return photos.insert_location(c, name, *camera_fields(info))

    cache[name], _ = _get_or_create(conn, f"location:{name}", lambda c: photos.location_named(c, name), create)
    return cache[name]


def deer_id_for_name(conn: sa.Connection, name: str, sex: str, report: ImportReport | None = None) -> str:
    """The deer row called ``name``, created (with ``sex``) when there is none; two imports at once
    share one row (see :func:`_get_or_create`). A deer of unknown sex takes the sex of a later labelled
    detection that knows it (the result must not depend on which sighting happens to come first)."""
    sex = sex if sex in CLASSIFICATIONS else "unknown"
    if reason := too_long(name, t.deer.c.name, "deer name"):
        raise EntryError(REFUSED + reason)
    deer_id, created = _get_or_create(conn, f"deer:{name}", lambda c: det_store.deer_named(c, name),
                                      lambda c: det_store.insert_deer(c, name, sex))
    if created and report is not None:
        report.deer_created += 1
    elif not created and sex != "unknown":
        det_store.set_sex_if_unknown(conn, deer_id, sex)
    return deer_id


def _already_imported(conn: sa.Connection, sha: str) -> bool:
    """Whether these bytes were imported (or failed as a photo). A record that failed for a reason
    other than its bytes (:data:`REFUSED`) is dropped so the photo is tried again."""
    row = photos.imported_with_sha(conn, sha)
    if row is None:
        return False
    if row[1] == "failed" and (row[2] or "").startswith(REFUSED):
        photos.delete_image(conn, row[0])
        return False
    return True


def _make_room_at_path(conn: sa.Connection, path: Path) -> str | None:
    """``images.path`` is unique: a photo whose bytes are new but whose path is already recorded
    either replaces this pipeline's 'failed' record of it (the file was repaired) or is refused
    with the reason returned (another photo is there), instead of failing the whole chunk."""
    row = photos.recorded_at_path(conn, str(path))
    if row is None:
        return None
    if row[1] == "failed" and row[2] is not None:
        photos.delete_image(conn, row[0])
        return None
    return "another photo is already recorded at this path (was the file changed after it was imported?)"


def _path_problem(path: Path) -> str | None:
    """Why ``path`` cannot be stored as a photo's path, or None."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return REFUSED + "file name is not valid UTF-8 (rename the file)"
    return too_long(str(path), t.images.c.path, "path") or too_long(path.name, t.images.c.filename, "file name")


def _insert_image(conn, *, path: Path, camera: str | None, camera_info, timestamp: datetime | None, batch: str,
                  loc_cache: dict[str, str], status: str, error: str | None, sha: str, size, exif) -> str:
    location = _location_id(conn, camera, camera_info, loc_cache) if camera else None
    if timestamp is None:
        timestamp = exif_time(exif or {}) or datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return photos.insert_image(conn, filename=path.name, path=str(path), timestamp=timestamp, location_id=location,
                               exif=exif or None, status=status, error=error, sha=sha, size=size, batch=batch)


# --- imports -------------------------------------------------------------------------------------
Progress = Callable[[int, int], None]


def _is_connection_problem(exc: sa.exc.DBAPIError) -> bool:
    return exc.connection_invalidated or isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))


def _guarded(conn: sa.Connection, report: ImportReport, path: Path, loc_cache: dict, work: Callable[[], None]) -> None:
    """Run one photo's import in a SAVEPOINT: a problem with this photo alone (its entry, its name, a
    value the database refuses) rolls back only it, records it as failed with the reason, and the
    chunk goes on. Losing the connection is not such a problem: it is raised (the chunk is retried).
    A unique-key race with an import running at the same time is retried once (it then finds the
    other import's rows)."""
    for attempt in (1, 2):
        saved = report._counters()
        try:
            with conn.begin_nested():
                work()
            return
        except (EntryError, SidecarError, BoxError, ImageError) as exc:
            reason = str(exc)
        except ValueError as exc:  # e.g. the driver refusing text it cannot send (NUL, lone surrogates)
            reason = f"{REFUSED}a value the database cannot store ({exc})"
        except sa.exc.DBAPIError as exc:
            if _is_connection_problem(exc):
                raise
            if isinstance(exc, sa.exc.IntegrityError) and getattr(exc.orig, "pgcode", None) == "23505" and attempt == 1:
                report._restore(saved)
                continue
            reason = REFUSED + "the database refused it: " + str(exc.orig).strip().splitlines()[0]
        report._restore(saved)
        loc_cache.clear()
        _record_failed(conn, path, reason, report)
        return


def _record_failed(conn: sa.Connection, path: Path, reason: str, report: ImportReport, sha: str | None = None) -> None:
    """Count ``path`` as failed with ``reason``, and keep a 'failed' image row for it when its bytes can
    be hashed and its path stored (a name the database cannot hold is only in the report)."""
    report.images_failed += 1
    report.failures.append((display_path(path), reason))
    if _path_problem(path) is not None or not path.is_file() or os.path.islink(path):
        return
    try:
        with conn.begin_nested():
            sha = sha or sha256_file(path)
            if photos.sha_known(conn, sha) or photos.path_known(conn, str(path)):
                return
            _insert_image(conn, path=path, camera=None, camera_info=None, timestamp=None, batch=report.batch,
                          loc_cache={}, status="failed", error=reason, sha=sha, size=None, exif=None)
    except sa.exc.DBAPIError as exc:
        if _is_connection_problem(exc):
            raise
    except OSError:
        pass


def _safe_listing(root: Path, report: ImportReport) -> list[Seen]:
    """Photos under ``root`` by the same rule as the upload sensor (:mod:`safe_paths`); refused names
    (symlinks leaving the folder, symlinked folders, special files) go to the report as failed."""
    found: list[Seen] = []
    rejected: dict[str, str] = {}
    walk_photos(str(root), found, rejected, IMAGE_SUFFIXES)
    for name, reason in sorted(rejected.items()):
        report.images_failed += 1
        report.failures.append((display_path(root / name), reason))
    return sorted(found, key=lambda seen: seen.rel)


def import_sidecar_folder(engine: sa.Engine, root: Path, *, batch: str | None = None,
                          ground_truth: Path | None = None, files: list[str] | None = None,
                          progress: Progress | None = None, chunk: int = 100) -> ImportReport:
    """Import the photos, detections, labels (and optional ground truth) described by
    ``root/detections.json``, and any other photo under ``root`` as pending detection. With
    ``files`` (paths relative to ``root``, e.g. an upload batch), only those photos. Photos already
    imported (same bytes) are skipped with their detections. A bad photo, a bad sidecar entry or a
    name the database cannot hold costs only that photo (recorded as failed with the reason); only a
    sidecar that is not a readable ``deer-reid-detections/1`` document at all stops the import."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise SidecarError(f"{root}: image folder not found")
    sidecar_path = root / "detections.json"
    sidecar = load_sidecar(sidecar_path, strict=False) if sidecar_path.exists() else Sidecar(images=[])
    truth = load_ground_truth_file(ground_truth) if ground_truth else {}
    report = ImportReport(batch=batch or f"import-{root.name}")
    by_path: dict[str, tuple[int, dict]] = {}
    for i, e in enumerate(sidecar.images):
        if i in sidecar.problems and not (isinstance(e, dict) and isinstance(e.get("file"), str)):
            report.images_failed += 1  # no photo to tie it to: only the report knows it
            report.failures.append((str(sidecar_path), sidecar.problems[i]))
            continue
        if i not in sidecar.problems or not (Path(e["file"]).is_absolute() or ".." in Path(e["file"]).parts):
            by_path.setdefault(os.path.normpath(root / e["file"]), (i, e))
        else:
            report.images_failed += 1
            report.failures.append((str(sidecar_path), sidecar.problems[i]))
    if files is None:
        candidates = [root / seen.rel for seen in _safe_listing(root, report)]
        chosen = dict(by_path)
    else:
        candidates, chosen = [], {}
        for name in files:
            try:
                _check_relative(name, f"files entry {name!r}")
            except SidecarError as exc:
                report.images_failed += 1
                report.failures.append((display_path(name), str(exc)))
                continue
            candidates.append(root / name)
    for file in candidates:  # photos the sidecar does not list come in 'pending' (for a detector)
        key = os.path.normpath(file)
        if key not in chosen:
            relative = file.relative_to(root)
            camera = relative.parts[0] if len(relative.parts) > 1 else None
            chosen[key] = by_path.get(key) or (None, {"file": str(relative), "camera": camera, "pending": True})
    entries = list(chosen.values())
    loc_cache: dict[str, str] = {}
    for start in range(0, len(entries), chunk):
        with engine.begin() as conn:  # one transaction per chunk: a failure loses nothing already committed
            for index, entry in entries[start : start + chunk]:
                path = root / entry["file"]
                if index in sidecar.problems:
                    _record_failed(conn, path, REFUSED + sidecar.problems[index], report)
                    continue
                _guarded(conn, report, path, loc_cache,
                         lambda e=entry: _import_entry(conn, root, e, sidecar.cameras, truth, report, loc_cache))
        if progress:
            progress(min(start + chunk, len(entries)), len(entries))
    return report


def _admit(conn, path: Path, report: ImportReport, loc_cache, *, camera: str | None = None,
           camera_info: dict | None = None, timestamp: datetime | None = None):
    """Hash, de-duplicate and decode one photo -> (image, sha256); None when it is skipped (already
    imported) or unusable (recorded in the report, and as a 'failed' image row when unreadable)."""
    if problem := _path_problem(path):
        raise EntryError(problem)
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
    if problem := link_problem(path, root):
        report.images_failed += 1
        report.failures.append((display_path(path), problem))
        return
    if not path.is_file():
        report.images_failed += 1
        report.failures.append((display_path(path), "file not found"))
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
        detection_id = det_store.insert_detection(conn, **values)
        report.detections += 1
        key = det.get("key")
        if isinstance(key, str) and key in truth:
            _insert_truth(conn, detection_id, truth[key], source="ground_truth_file")
            report.ground_truth += 1


def _insert_truth(conn, detection_id: str, truth: dict[str, Any], source: str) -> None:
    attributes = {k: v for k, v in truth.items() if k not in {"deer", "sex", "antler_points"}}
    det_store.insert_ground_truth(conn, detection_id=detection_id, identity=str(truth["deer"]), sex=truth.get("sex"),
                                  antler_points=truth.get("antler_points"), attributes=attributes, source=source)


# Crop-folder imports live beside this module and share its helpers; importable from here as before.
from deer_reid_assets.core.ingest.crop_folders import import_crop_folders, iter_crop_folders  # noqa: E402,F401
