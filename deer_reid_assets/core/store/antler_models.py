"""Trained antler keypoint models (``reid_antler_models``): checkpoint, sha256, start point, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core.ingest.imaging import sha256_file


def register(engine: sa.Engine, *, checkpoint: Path, started_from: str, pretrained: bool, profile: str, device: str,
             train_photos: int, val_photos: int, metrics: dict) -> str:
    """Record a checkpoint; its version is ``ap-<sha256[:10]>`` (the same file, the same version)."""
    sha = sha256_file(checkpoint)
    version = f"ap-{sha[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO reid_antler_models (version, checkpoint_path, checkpoint_sha256, started_from, pretrained,
                                               profile, device, train_photos, val_photos, metrics)
               VALUES (:v, :p, :s, :f, :pre, :prof, :d, :nt, :nv, CAST(:m AS jsonb))
               ON CONFLICT (version) DO NOTHING"""),
            {"v": version, "p": str(checkpoint), "s": sha, "f": started_from, "pre": pretrained, "prof": profile,
             "d": device, "nt": train_photos, "nv": val_photos, "m": json.dumps(metrics)})
    return version


def latest(engine: sa.Engine) -> dict | None:
    """The newest registered model whose checkpoint is still there and unchanged."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM reid_antler_models ORDER BY created_at DESC, version")).mappings()
        rows = [dict(r) for r in rows]
    for row in rows:
        path = Path(row["checkpoint_path"])
        if path.is_file() and sha256_file(path) == row["checkpoint_sha256"]:
            return row
    return None
