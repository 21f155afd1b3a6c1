"""The SQL of writing detections as the importer (``core/ingest/importer.py``, ``crop_folders.py``) and
the detector (``core/ingest/detector.py``) find them: the detection rows, their hidden ground truth, and
the deer an import labels them with (found or created by name). Callers own the transaction."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t


def insert_detection(conn: sa.Connection, **values: Any) -> str:
    """A new ``detections`` row with ``values``; returns its id."""
    return conn.execute(sa.insert(t.detections).values(**values).returning(t.detections.c.id)).scalar_one()


def insert_ground_truth(conn: sa.Connection, *, detection_id: str, identity: str, sex: str | None,
                        antler_points: Any, attributes: dict[str, Any], source: str) -> None:
    conn.execute(
        sa.insert(t.reid_ground_truth).values(
            detection_id=detection_id, identity=identity, sex=sex,
            antler_points=antler_points, attributes=attributes, source=source,
        )
    )


def deer_named(conn: sa.Connection, name: str) -> str | None:
    """Id of the (oldest-id) deer called ``name``, or None."""
    d = t.deer
    return conn.execute(sa.select(d.c.id).where(d.c.name == name).order_by(d.c.id).limit(1)).scalar()


def insert_deer(conn: sa.Connection, name: str, sex: str) -> str:
    """A new deer; returns its id."""
    d = t.deer
    return conn.execute(sa.insert(d).values(name=name, sex=sex).returning(d.c.id)).scalar_one()


def set_sex_if_unknown(conn: sa.Connection, deer_id: str, sex: str) -> None:
    """Give a deer of unknown sex ``sex`` (a deer whose sex is known keeps it)."""
    d = t.deer
    conn.execute(sa.update(d).where(d.c.id == deer_id, d.c.sex == "unknown").values(sex=sex))
