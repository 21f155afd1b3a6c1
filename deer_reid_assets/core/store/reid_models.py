"""Trained ReID models as versioned artefacts: a checkpoint file plus a ``reid_models`` row that
says which manifest and config produced it, its sha256 and its training history."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core.ingest.imaging import sha256_file


def register_model(engine: sa.Engine, *, manifest_version: str, checkpoint: Path, config: dict, history: list[dict],
                   best_val_map: float | None, device: str) -> str:
    """Record a trained checkpoint; returns its version ``ft-<sha256[:10]>`` (the same file = the same version)."""
    sha = sha256_file(checkpoint)
    version = f"ft-{sha[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO reid_models (version, manifest_version, checkpoint_path, checkpoint_sha256, config, history,
                                        best_val_map, device)
               VALUES (:v, :m, :p, :s, :c, :h, :b, :d) ON CONFLICT (version) DO NOTHING"""),
            {"v": version, "m": manifest_version, "p": str(checkpoint), "s": sha, "c": json.dumps(config),
             "h": json.dumps(history), "b": best_val_map, "d": device})
    return version


def latest_model(engine: sa.Engine) -> dict | None:
    """The newest registered model whose checkpoint file is still there and unchanged."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM reid_models ORDER BY created_at DESC")).mappings().all()
    for row in rows:
        path = Path(row["checkpoint_path"])
        if path.is_file() and sha256_file(path) == row["checkpoint_sha256"]:
            return dict(row)
    return None


def latest_manifest_version(engine: sa.Engine) -> str | None:
    """The newest training manifest in ``reid_training_manifests`` (what triplet_dataset built last)."""
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT version FROM reid_training_manifests ORDER BY created_at DESC, version LIMIT 1")).scalar()
