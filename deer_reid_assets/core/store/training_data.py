"""The training manifests' SQL (``reid_training_manifests``, ``reid_training_items``): the labelled crops a
manifest is built from, storing a manifest, and reading one back (``core/reid/triplet_data.py`` splits
them)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from deer_reid_assets.core.store.evaluations import SPLIT_KEY_SQL


def labelled_crops(conn: sa.Connection, split_name: str) -> list[sa.Row]:
    """(detection id, identity, crop path, split key, evaluation role or None) of each reviewed, valid
    detection with a deer and an ok crop, by split key (keys not made unique yet)."""
    return conn.execute(sa.text(
        f"""
        SELECT d.id::text, COALESCE(dr.name, dr.id::text), c.path, {SPLIT_KEY_SQL}, s.role
        FROM detections d
        LEFT JOIN reid_image_files f ON f.image_id = d.image_id
        JOIN deer dr ON dr.id = d.deer_id
        JOIN reid_crops c ON c.detection_id = d.id AND c.status = 'ok'
        LEFT JOIN reid_eval_splits s ON s.detection_id = d.id AND s.split_name = :split
        WHERE d.is_reviewed IS TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
        ORDER BY 4, d.id
        """), {"split": split_name}).all()


def manifest_exists(conn: sa.Connection, version: str) -> bool:
    return conn.execute(sa.text("SELECT 1 FROM reid_training_manifests WHERE version = :v"),
                        {"v": version}).first() is not None


def insert_manifest(conn: sa.Connection, version: str, config: dict, stats: dict, items: list[dict]) -> None:
    """A manifest and its items (``{"detection_id", "identity", "split"}``)."""
    conn.execute(sa.text("INSERT INTO reid_training_manifests (version, config, stats) VALUES (:v, :c, :s)"),
                 {"v": version, "c": json.dumps(config), "s": json.dumps(stats)})
    conn.execute(sa.text("INSERT INTO reid_training_items (version, detection_id, identity, split) "
                         "VALUES (:v, CAST(:d AS uuid), :i, :s)"),
                 [{"v": version, "d": i["detection_id"], "i": i["identity"], "s": i["split"]} for i in items])


def manifest_head(conn: sa.Connection, version: str) -> sa.Row | None:
    """``(config, stats)`` of a stored manifest, or None."""
    return conn.execute(sa.text("SELECT config, stats FROM reid_training_manifests WHERE version = :v"),
                        {"v": version}).first()


def manifest_items(conn: sa.Connection, version: str) -> list[sa.Row]:
    """(detection id, identity, split, crop path) of a manifest's items, in the same order in any database."""
    return conn.execute(sa.text(
        f"""SELECT t.detection_id::text, t.identity, t.split, c.path FROM reid_training_items t
            JOIN reid_crops c ON c.detection_id = t.detection_id
            JOIN detections d ON d.id = t.detection_id
            LEFT JOIN reid_image_files f ON f.image_id = d.image_id
            WHERE t.version = :v ORDER BY {SPLIT_KEY_SQL}, d.id"""),
        {"v": version}).all()
