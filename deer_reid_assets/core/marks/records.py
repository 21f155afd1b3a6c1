"""Recording a deer's marks (the review app's deer page, or a file of a person's records), each save one
``reid_deer_marks`` row (who, when, before, after) in one transaction that also rewrites the deer's
``physical_features`` marks; and undo.

A file of records (format ``deer-reid-marks/1``)::

    {"format": "deer-reid-marks/1", "reviewer": "Frank",
     "deer": [{"name": "Buck-03", "throat_patch": "large", "flank_left": "scar", "ear_notch_right": "notched"}]}

names each deer by its name and gives the fields of ``vocabulary.FIELDS`` it saw. Saving the marks a
deer already has records nothing, so importing the same file twice changes nothing. A bad entry (an
unknown deer, a value not in the vocabulary) is one line and costs only itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core.store import marks as store

from . import features, vocabulary
from .vocabulary import MarkError

FORMAT = "deer-reid-marks/1"
REVIEW_APP = "review app"


@dataclass(frozen=True)
class Saved:
    record_id: int | None  # None: the deer already had exactly these marks, nothing recorded
    marks: dict[str, str]


def record(engine: sa.Engine, deer_id: str, values: dict, *, reviewer: str, source: str = REVIEW_APP) -> Saved:
    """Record ``values`` (field -> value, as a form sends them; fields not seen may be empty) as the
    deer's marks. Raises :class:`MarkError` (one line) for a bad value, reviewer or deer."""
    marks = vocabulary.parse(values)
    with engine.begin() as conn:
        return _record(conn, deer_id, marks, _reviewer(reviewer), source)


def _record(conn: sa.Connection, deer_id: str, marks: dict[str, str], reviewer: str, source: str) -> Saved:
    if store.lock_deer(conn, deer_id) is None:
        raise MarkError(f"no deer {deer_id}")
    now = store.current(conn, [deer_id]).get(deer_id)
    before = now["after"] if now else None
    if (before or {}) == marks:
        return Saved(None, marks)
    record_id = store.insert_record(conn, deer_id=deer_id, reviewer=reviewer, source=source, before=before,
                                    after=marks)
    features.refresh(conn, [deer_id])
    return Saved(record_id, marks)


def undo_record(conn: sa.Connection, row: dict) -> dict:
    """Undo one record (inside the caller's transaction; ``row`` from ``store.last_by_reviewer``): the
    deer's marks go back to what they were. Refused when someone recorded its marks since."""
    deer = store.lock_deer(conn, row["deer_id"])
    newest = store.current(conn, [row["deer_id"]]).get(row["deer_id"])
    if newest is not None and newest["id"] != row["id"]:
        name = (deer or {}).get("name") or row["deer_id"]
        raise MarkError(f"the marks of {name} were recorded again since (by {newest['reviewer']}); not undone")
    store.mark_undone(conn, row["id"])
    if deer is not None:
        features.refresh(conn, [row["deer_id"]])
    return row


@dataclass
class ImportReport:
    recorded: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)


def import_file(engine: sa.Engine, path: Path) -> ImportReport:
    """Record the marks of a ``deer-reid-marks/1`` file (or of every ``*.json`` in a folder)."""
    path = Path(path)
    report = ImportReport()
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    for file in files:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            report.errors.append(f"{file}: not readable as JSON ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("deer"), list):
            report.errors.append(f"{file}: not a {FORMAT} file (a 'format' and a 'deer' list are needed)")
            continue
        try:
            reviewer = _reviewer(str(doc.get("reviewer") or ""))
        except MarkError:
            report.errors.append(f"{file}: no 'reviewer' (who recorded these marks)")
            continue
        for n, entry in enumerate(doc["deer"]):
            _import_entry(engine, file, n, entry, reviewer, report)
    return report


def _import_entry(engine: sa.Engine, file: Path, n: int, entry, reviewer: str, report: ImportReport) -> None:
    name = entry.get("name") if isinstance(entry, dict) else None
    where = f"{file}: deer {name!r}" if name else f"{file}: entry {n}"
    try:
        if not isinstance(name, str) or not name.strip():
            raise MarkError("no 'name'")
        marks = vocabulary.parse({k: v for k, v in entry.items() if k != "name"})
        with engine.begin() as conn:
            ids = store.deer_ids_named(conn, name)
            if len(ids) != 1:
                raise MarkError("no deer of that name" if not ids else f"{len(ids)} deer share that name")
            saved = _record(conn, ids[0], marks, reviewer, f"file {file.name}")
    except MarkError as exc:
        report.errors.append(f"{where}: {exc}")
        return
    if saved.record_id is None:
        report.unchanged += 1
    else:
        report.recorded += 1


def _reviewer(name: str) -> str:
    name = (name or "").strip()[:100]
    if not name:
        raise MarkError("a reviewer name is required")
    return name
