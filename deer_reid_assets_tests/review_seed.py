"""A small review scene in a migrated database: three deer with labelled crops, and four pending
detections the matcher scored (one uncertain, one new-animal candidate, two confident audits)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from deer_reid_assets.core.ingest.crops import crop_path

THRESHOLD = 0.40


def _crop(store: Path, det: str, colour: tuple[int, int, int]) -> str:
    path = crop_path(store, det)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), colour).save(path)
    return str(path)


def seed(engine: sa.Engine, store: Path) -> dict[str, str]:
    """Returns {name: id} of the deer (A, B, C) and pending detections (uncertain, new, audit1, audit2)."""
    ids: dict[str, str] = {}
    with engine.begin() as conn:
        x = lambda sql, **p: conn.execute(sa.text(sql), p).scalar()  # noqa: E731
        loc = x("INSERT INTO locations (name) VALUES ('cam01') RETURNING id::text")
        img = x("INSERT INTO images (filename, path, timestamp, location_id) VALUES ('a.jpg', '/p/a.jpg', "
                "'2026-10-03 06:00+00', CAST(:l AS uuid)) RETURNING id::text", l=loc)
        for name, sex in (("A", "buck"), ("B", "buck"), ("C", "doe")):
            ids[name] = x("INSERT INTO deer (name, sex) VALUES (:n, CAST(:s AS deersex)) RETURNING id::text", n=name, s=sex)

        def detection(deer: str | None, reviewed: bool, colour, classification="buck") -> str:
            det = x("INSERT INTO detections (image_id, deer_id, bbox, confidence, classification, is_reviewed) "
                    "VALUES (CAST(:i AS uuid), CAST(:d AS uuid), CAST(:b AS json), 0.9, "
                    ":c, :r) RETURNING id::text", i=img, d=deer, c=classification, r=reviewed,
                    b='{"x": 0, "y": 0, "width": 64, "height": 64}')
            conn.execute(sa.text("INSERT INTO reid_crops (detection_id, status, path, width, height, crop_version) "
                                 "VALUES (CAST(:d AS uuid), 'ok', :p, 64, 64, 'test')"),
                         {"d": det, "p": _crop(store, det, colour)})
            return det

        for name, colour in (("A", (200, 60, 60)), ("B", (60, 200, 60)), ("C", (60, 60, 200))):
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
