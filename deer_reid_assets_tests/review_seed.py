"""A small review scene in a migrated database: three deer with labelled crops, and four pending
detections the matcher scored (one uncertain, one new-animal candidate, two confident audits)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest.crops import crop_path
from deer_reid_assets.core.store import schema as t

THRESHOLD = 0.40


def _crop(store: Path, det: str, colour: tuple[int, int, int]) -> str:
    path = crop_path(store, det)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)
    return str(path)


def seed(engine: sa.Engine, store: Path, *, extra_deer: tuple[str, ...] = ()) -> dict[str, str]:
    """Returns {name: id} of the deer (A, B, C, and ``extra_deer``: does with two labelled crops each) and
    pending detections (uncertain, new, audit1, audit2)."""
    ids: dict[str, str] = {}
    with engine.begin() as conn:
        one = lambda stmt: conn.execute(stmt).scalar_one()  # noqa: E731
        loc = one(sa.insert(t.locations).values(name="cam01").returning(t.locations.c.id))
        img = one(sa.insert(t.images).values(filename="a.jpg", path="/p/a.jpg", location_id=loc,
                                             timestamp=datetime(2026, 10, 3, 6, tzinfo=UTC))
                  .returning(t.images.c.id))
        for name, sex in (("A", "buck"), ("B", "buck"), ("C", "doe"), *((n, "doe") for n in extra_deer)):
            ids[name] = one(sa.insert(t.deer).values(name=name, sex=sex).returning(t.deer.c.id))

        def detection(deer: str | None, reviewed: bool, colour, classification="buck") -> str:
            det = one(sa.insert(t.detections).values(
                image_id=img, deer_id=deer, bbox={"x": 0, "y": 0, "width": 64, "height": 64}, confidence=0.9,
                classification=classification, is_reviewed=reviewed).returning(t.detections.c.id))
            conn.execute(sa.text("INSERT INTO reid_crops (detection_id, status, path, width, height, crop_version) "
                                 "VALUES (CAST(:d AS uuid), 'ok', :p, 64, 64, 'test')"),
                         {"d": det, "p": _crop(store, det, colour)})
            return det

        for name, colour in (("A", (200, 60, 60)), ("B", (60, 200, 60)), ("C", (60, 60, 200)),
                             *((n, (40 * i, 200, 200)) for i, n in enumerate(extra_deer))):
            for _ in range(2):
                detection(ids[name], True, colour)
        scene = {"uncertain": ("A", [("A", 0.62), ("B", 0.60)]), "new": (None, [("A", 0.20), ("B", 0.15)]),
                 "audit1": ("A", [("A", 0.90), ("B", 0.30)]), "audit2": ("B", [("B", 0.85), ("C", 0.20)])}
        for key, (assigned, scores) in scene.items():
            det = detection(ids[assigned] if assigned else None, False, (120, 120, 120))
            ids[key] = det
            for name, sim in scores:
                conn.execute(sa.text(
                    "INSERT INTO reid_similarity_scores (detection_id, deer_id, similarity_score, sex_match, matched, "
                    "threshold_used) VALUES (CAST(:d AS uuid), CAST(:r AS uuid), :s, true, :m, :t)"),
                    {"d": det, "r": ids[name], "s": sim, "m": name == assigned, "t": THRESHOLD})
    return ids


def review_fields(engine: sa.Engine, detection_id: str) -> dict:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT deer_id::text AS deer_id, is_reviewed, is_valid, reviewed_by, correction_notes FROM detections "
            "WHERE id = CAST(:d AS uuid)"), {"d": detection_id}).mappings().one()
    return dict(row)
