"""The ``detections.json`` / ``ground_truth.json`` formats: parsing and validation.

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

A problem with the *document* (not JSON, wrong ``format``, no ``images`` list) is a
:class:`SidecarError` for the whole file. A problem with one *entry* (a bad timestamp, a detection
without a box, a label longer than the database allows...) belongs to that entry alone:
:func:`load_sidecar` with ``strict=False`` returns it in ``problems`` and the importer records that
photo as failed with the reason while the rest of the folder is imported.

JSON's non-standard constants ``NaN`` / ``Infinity`` / ``-Infinity`` (Python's ``json`` writes them)
are kept as the strings ``"NaN"`` etc.: PostgreSQL's ``jsonb`` cannot hold them as numbers, and the
crop step rejects such a box with the reason "values must be finite".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deer_reid_assets.core.store import schema as t

SIDECAR_FORMAT = "deer-reid-detections/1"
GROUND_TRUTH_FORMAT = "deer-reid-ground-truth/1"
CLASSIFICATIONS = {"buck", "doe", "fawn", "unknown"}


class SidecarError(ValueError):
    """A detections/ground-truth file that does not follow its documented format."""


@dataclass
class Sidecar:
    images: list[dict[str, Any]]
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: dict[int, str] = field(default_factory=dict)  # index in images -> why that entry is refused


def column_limit(column) -> int | None:
    """The declared length of a VARCHAR column of the schema (None: unbounded)."""
    return getattr(column.type, "length", None)


def too_long(value: str, column, what: str) -> str | None:
    """A one-line reason when ``value`` does not fit ``column``, else None."""
    limit = column_limit(column)
    if limit is not None and len(value) > limit:
        return f"{what} is {len(value)} characters, longer than the {limit} the database allows: {value[:40]!r}..."
    return None


def load_sidecar(path: Path, *, strict: bool = True) -> dict[str, Any] | Sidecar:
    """Parse and validate a detections sidecar. ``strict``: the document, every entry valid, else a
    SidecarError naming the file and the first bad entry. Not strict: a :class:`Sidecar` whose
    ``problems`` name each bad entry (only document-level problems raise)."""
    data = _load_json(path)
    if data.get("format") != SIDECAR_FORMAT:
        raise SidecarError(f"{path}: 'format' must be {SIDECAR_FORMAT!r}, got {data.get('format')!r}")
    images = data.get("images")
    if not isinstance(images, list):
        raise SidecarError(f"{path}: 'images' must be a list")
    problems: dict[int, str] = {}
    for i, entry in enumerate(images):
        try:
            check_entry(entry, f"{path}: images[{i}]")
        except SidecarError as exc:
            if strict:
                raise
            problems[i] = str(exc)
    if strict:
        return data
    cameras = {c["name"]: c for c in data.get("cameras", []) or [] if isinstance(c, dict) and isinstance(c.get("name"), str)}
    return Sidecar(images=images, cameras=cameras, problems=problems)


def check_entry(entry: Any, where: str) -> None:
    """SidecarError naming ``where`` when one image entry (or one of its detections) is unusable."""
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise SidecarError(f"{where}: each image needs a 'file' string")
    check_relative(entry["file"], where)
    if "timestamp" in entry:
        parse_time(entry["timestamp"], where)
    if _has_nul(entry):
        raise SidecarError(f"{where}: contains a NUL character, which the database cannot store")
    camera = entry.get("camera")
    if camera is not None and not isinstance(camera, str):
        raise SidecarError(f"{where}: 'camera' must be a string, got {camera!r}")
    if camera and (reason := too_long(camera, t.locations.c.name, "camera name")):
        raise SidecarError(f"{where}: {reason}")
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
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not math.isfinite(conf) or not 0.0 <= conf <= 1.0:
            raise SidecarError(f"{dwhere}: confidence must be a number in [0, 1], got {conf!r}")
        label = det.get("label")
        if label is not None and not isinstance(label, (str, int)):
            raise SidecarError(f"{dwhere}: label must be a deer name (a string), got {label!r}")
        if label and (reason := too_long(str(label), t.deer.c.name, "deer name")):
            raise SidecarError(f"{dwhere}: {reason}")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


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
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=str)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SidecarError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SidecarError(f"{path}: the top level must be a JSON object")
    return data


def check_relative(name: str, where: str) -> None:
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or "\x00" in name:
        raise SidecarError(f"{where}: file {name!r} must be a path inside the folder (no absolute paths or '..')")


def parse_time(value: Any, where: str) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise SidecarError(f"{where}: timestamp {value!r} is not ISO 8601") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def exif_time(exif: dict[str, Any]) -> datetime | None:
    """When the photo was taken by its EXIF (``DateTimeOriginal``, else ``DateTime``), UTC; None if absent or bad."""
    raw = exif.get("DateTimeOriginal") or exif.get("DateTime")
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def camera_fields(info: dict[str, Any]) -> tuple[str | None, dict[str, float] | None]:
    """A sidecar camera's (description, position): text only if it is text, and the position the way
    the existing system keeps it, ``{"lat": .., "lon": ..}``, only when both are finite numbers."""
    description = info.get("description") if isinstance(info.get("description"), str) else None

    def number(value: Any) -> float | None:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok else None

    lat, lon = number(info.get("latitude")), number(info.get("longitude"))
    return description, ({"lat": lat, "lon": lon} if lat is not None and lon is not None else None)
