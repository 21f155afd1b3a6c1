"""The photos' SQL (``images``, ``reid_image_files`` and the cameras in ``locations``): what the importer
(``core/ingest/importer.py``, ``crop_folders.py``) finds and records, and the photos the detector
(``core/ingest/detector.py``) works through. Callers own the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t

_NAME_LOCK = 0x5EED_0DE1  # advisory lock class: one creator per deer (or camera) name at a time


def lock_name(conn: sa.Connection, name: str) -> None:
    """Take the advisory lock of ``name`` until the transaction ends (the creator of a row named so)."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:c, hashtext(:n))"), {"c": _NAME_LOCK, "n": name})


def location_named(conn: sa.Connection, name: str) -> str | None:
    """Id of a camera location called ``name``, or None."""
    loc = t.locations
    return conn.execute(sa.select(loc.c.id).where(loc.c.name == name).limit(1)).scalar()


def insert_location(conn: sa.Connection, name: str, description: str | None,
                    coordinates: dict[str, float] | None) -> str:
    """A new camera location; returns its id."""
    loc = t.locations
    return conn.execute(sa.insert(loc).values(name=name, description=description, coordinates=coordinates)
                        .returning(loc.c.id)).scalar_one()


def imported_with_sha(conn: sa.Connection, sha: str) -> sa.Row | None:
    """``(image id, processing status, error message)`` of the photo imported with these bytes, or None."""
    i, f = t.images, t.reid_image_files
    return conn.execute(sa.select(f.c.image_id, i.c.processing_status, i.c.error_message)
                        .join(i, i.c.id == f.c.image_id).where(f.c.sha256 == sha)).first()


def recorded_at_path(conn: sa.Connection, path: str) -> sa.Row | None:
    """``(image id, processing status, this pipeline's file row's image id or None)`` of the photo
    recorded at ``path``, or None."""
    i, f = t.images, t.reid_image_files
    return conn.execute(
        sa.select(i.c.id, i.c.processing_status, f.c.image_id).outerjoin(f, f.c.image_id == i.c.id)
        .where(i.c.path == path)
    ).first()


def sha_known(conn: sa.Connection, sha: str) -> bool:
    """Whether a photo with these bytes is recorded."""
    f = t.reid_image_files
    return conn.execute(sa.select(f.c.image_id).where(f.c.sha256 == sha)).first() is not None


def path_known(conn: sa.Connection, path: str) -> bool:
    """Whether a photo is recorded at ``path``."""
    return conn.execute(sa.select(t.images.c.id).where(t.images.c.path == path)).first() is not None


def delete_image(conn: sa.Connection, image_id: str) -> None:
    conn.execute(sa.delete(t.images).where(t.images.c.id == image_id))


def insert_image(conn: sa.Connection, *, filename: str, path: str, timestamp: datetime, location_id: str | None,
                 exif: dict[str, Any] | None, status: str, error: str | None, sha: str,
                 size: tuple[int, int] | None, batch: str) -> str:
    """A photo's ``images`` row (counted in its camera's ``image_count``, as the existing system does)
    and its ``reid_image_files`` row; returns the image id."""
    image_id = conn.execute(
        sa.insert(t.images)
        .values(filename=filename, path=path, timestamp=timestamp, location_id=location_id,
                exif_data=exif, processing_status=status, error_message=error)
        .returning(t.images.c.id)
    ).scalar_one()
    if location_id is not None:
        conn.execute(sa.update(t.locations).where(t.locations.c.id == location_id)
                     .values(image_count=t.locations.c.image_count + 1))
    conn.execute(
        sa.insert(t.reid_image_files).values(
            image_id=image_id, sha256=sha, width=size[0] if size else None, height=size[1] if size else None,
            source_path=path, import_batch=batch,
        )
    )
    return image_id


def pending_images(conn: sa.Connection, image_batches: list[str] | None = None) -> list[tuple[str, str]]:
    """(id, path) of the photos waiting for the detector (of ``image_batches`` only, when given)."""
    i, f = t.images, t.reid_image_files
    query = sa.select(i.c.id, i.c.path).where(i.c.processing_status == "pending").order_by(i.c.id)
    if image_batches:
        query = query.join(f, f.c.image_id == i.c.id).where(f.c.import_batch.in_(image_batches))
    return [(r[0], r[1]) for r in conn.execute(query)]


def mark_failed(conn: sa.Connection, image_id: str, reason: str) -> None:
    conn.execute(sa.update(t.images).where(t.images.c.id == image_id)
                 .values(processing_status="failed", error_message=reason))


def mark_completed(conn: sa.Connection, image_id: str) -> None:
    conn.execute(sa.update(t.images).where(t.images.c.id == image_id).values(processing_status="completed"))
