"""New photos that reached the existing system through its API and worker (``images`` +
``detections``), found in the database rather than in an upload folder.

A photo is *finished* when its worker's detector is done with it: ``processing_status = 'completed'``
(its worker commits the detections in the same transaction) and it has at least one detection. The
scan orders finished photos by when their detections were written (``max(detections.created_at)``)
and keeps a watermark in the cursor. Because a transaction can commit after a later one, photos
finished up to ``LOOKBACK`` before the watermark are looked at again and the ids already submitted
in that window are remembered, so a photo is submitted once and only once. The first evaluation
starts at the present (the collection already there is matched by a full run); photos this
pipeline imported itself (``reid_image_files``) are never submitted.

``register`` records such photos as one import batch of this pipeline (content hash, size), reading
the file but writing nothing into the existing system's tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core.store import schema as t

LOOKBACK = timedelta(minutes=10)

_FINISHED = sa.text(
    """
    SELECT i.id::text AS image_id, COALESCE(l.name, 'no-camera') AS camera, i."timestamp" AS taken,
           max(d.created_at) AS finished
    FROM images i
    JOIN detections d ON d.image_id = i.id
    LEFT JOIN locations l ON l.id = i.location_id
    WHERE i.processing_status = 'completed'
      AND NOT EXISTS (SELECT 1 FROM reid_image_files f WHERE f.image_id = i.id)
    GROUP BY i.id, l.name, i."timestamp"
    HAVING max(d.created_at) > :since
    ORDER BY finished, i.id
    LIMIT :limit
    """
)


@dataclass(frozen=True)
class DbBatch:
    key: str  # partition key, camera x capture day, as for folder uploads
    image_ids: list[str]


@dataclass(frozen=True)
class DbScan:
    batches: list[DbBatch]
    cursor: str
    deferred: bool  # more finished photos than max_images: the next evaluation goes on

    @property
    def submitted(self) -> int:
        return sum(len(b.image_ids) for b in self.batches)


def _parse(cursor: str | None) -> tuple[datetime | None, dict[str, str]]:
    if not cursor:
        return None, {}
    try:
        state = json.loads(cursor)
        return datetime.fromisoformat(state["t"]), dict(state["recent"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed database-upload cursor: {exc}") from None


def scan_finished(conn: sa.Connection, cursor: str | None, *, max_images: int = 500) -> DbScan:
    """Finished photos since ``cursor`` (see the module docstring), grouped per camera and day."""
    from deer_reid_assets.core.ingest.uploads import camera_key

    watermark, recent = _parse(cursor)
    if watermark is None:  # first evaluation: start at the present, remembering the photos just before it
        now = conn.execute(sa.text(
            "SELECT max(d.created_at) FROM detections d JOIN images i ON i.id = d.image_id "
            "WHERE i.processing_status = 'completed'")).scalar()
        start = now or datetime.fromisoformat("1970-01-01T00:00:00+00:00")
        window = conn.execute(_FINISHED, {"since": start - LOOKBACK, "limit": 100_000}).all()
        recent = sorted((r.image_id, r.finished.isoformat()) for r in window)
        return DbScan([], json.dumps({"t": start.isoformat(), "recent": recent}), False)
    rows = conn.execute(_FINISHED, {"since": watermark - LOOKBACK, "limit": max_images + len(recent) + 1}).all()
    fresh = [r for r in rows if r.image_id not in recent]
    deferred = len(fresh) > max_images
    fresh = fresh[:max_images]
    groups: dict[str, list[str]] = {}
    for r in fresh:
        groups.setdefault(f"{camera_key(r.camera)}__{r.taken.date().isoformat()}", []).append(r.image_id)
        recent[r.image_id] = r.finished.isoformat()
        watermark = max(watermark, r.finished)
    keep_after = watermark - LOOKBACK
    recent = {i: f for i, f in recent.items() if datetime.fromisoformat(f) > keep_after}
    cursor_out = json.dumps({"t": watermark.isoformat(), "recent": sorted(recent.items())})
    return DbScan([DbBatch(k, ids) for k, ids in sorted(groups.items())], cursor_out, deferred)


@dataclass
class RegisterReport:
    registered: int = 0
    already: int = 0
    unreadable: int = 0
    detections: int = 0


def register(engine: sa.Engine, image_ids: list[str], batch: str) -> RegisterReport:
    """Record the existing system's photos ``image_ids`` as import batch ``batch`` (idempotent)."""
    from deer_reid_assets.core.ingest.imaging import sha256_file

    report = RegisterReport()
    with engine.begin() as conn:
        rows = conn.execute(sa.select(t.images.c.id, t.images.c.path).where(t.images.c.id.in_(image_ids))).all()
        known = set(conn.execute(sa.select(t.reid_image_files.c.image_id)
                                 .where(t.reid_image_files.c.image_id.in_(image_ids))).scalars())
        for image_id, path in rows:
            if image_id in known:
                report.already += 1
                continue
            try:
                sha = sha256_file(Path(path))
            except OSError:
                report.unreadable += 1  # its crops are rejected with the reason; its own row stays as it is
                continue
            done = conn.execute(pg_insert(t.reid_image_files).values(
                image_id=image_id, sha256=sha, source_path=str(path), import_batch=batch,
            ).on_conflict_do_nothing()).rowcount
            report.registered += done
            report.already += 1 - done
        report.detections = conn.execute(sa.select(sa.func.count()).select_from(t.detections)
                                         .where(t.detections.c.image_id.in_(image_ids))).scalar()
    return report
