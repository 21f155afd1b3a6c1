"""Trained ReID models as versioned artefacts: a checkpoint file plus a ``reid_models`` row that
says which manifest and config produced it, its sha256, its training history (one record per epoch,
epoch 0 = the untrained network) and the collapse guard's verdict (``status`` 'ok' | 'collapsed',
``guard``). A collapsed model is never handed to the embedder, so it is never published."""

from __future__ import annotations

import json
import math
from pathlib import Path

import sqlalchemy as sa

from deer_reid_assets.core.ingest.imaging import sha256_file


def _json(value) -> str:
    """Strict JSON (NaN and infinities become null, as JSONB requires)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), allow_nan=False)


def register_model(engine: sa.Engine, *, manifest_version: str, checkpoint: Path, config: dict, history: list[dict],
                   best_val_map: float | None, device: str, status: str = "ok", guard: dict | None = None) -> str:
    """Record a trained checkpoint; returns its version ``ft-<sha256[:10]>`` (the same file = the same version)."""
    sha = sha256_file(checkpoint)
    version = f"ft-{sha[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(
            """INSERT INTO reid_models (version, manifest_version, checkpoint_path, checkpoint_sha256, config, history,
                                        best_val_map, device, status, guard)
               VALUES (:v, :m, :p, :s, :c, :h, :b, :d, :st, :g) ON CONFLICT (version) DO NOTHING"""),
            {"v": version, "m": manifest_version, "p": str(checkpoint), "s": sha, "c": _json(config),
             "h": _json(history), "b": best_val_map, "d": device, "st": status,
             "g": None if guard is None else _json(guard)})
    return version


def latest_model(engine: sa.Engine, *, include_collapsed: bool = False) -> dict | None:
    """The newest registered model whose checkpoint file is still there and unchanged; collapsed
    models are skipped unless ``include_collapsed``."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT * FROM reid_models WHERE :all OR status <> 'collapsed' ORDER BY created_at DESC"),
            {"all": include_collapsed}).mappings().all()
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


def model_with_sha_prefix(engine: sa.Engine, prefix: str) -> dict | None:
    """The registered model whose checkpoint's sha256 starts with ``prefix`` (a fine-tuned embedding
    version's ``weights_id`` is ``reid-<sha256[:12]>``), when its file is still there and unchanged."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM reid_models WHERE checkpoint_sha256 LIKE :p ORDER BY created_at DESC"),
                            {"p": f"{prefix}%"}).mappings().all()
    for row in rows:
        path = Path(row["checkpoint_path"])
        if path.is_file() and sha256_file(path) == row["checkpoint_sha256"]:
            return dict(row)
    return None
