"""The evaluation's SQL: the labelled detections, the stored split, the live matcher's figures and the
saved evaluations (``core/evaluation/protocol.py`` computes with them)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t

SPLIT_KEY_SQL = "COALESCE(f.sha256, d.image_id::text) || ':' || d.bbox::text"
"""What a detection is, independent of database ids: the same photo and box get the same split in
any database (a re-import, a fresh demo), so two runs compare like with like."""


def labelled_rows(conn: sa.Connection) -> Iterator[tuple[str, str, str, str, str]]:
    """(detection id, identity, class, split key, burst) of each labelled detection, read 5,000 at
    a time; split keys are made unique in SQL (as :func:`unique_keys` does); an identity, class or
    burst is one string object however many detections share it."""
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(sa.text(
        f"""
        SELECT d.id::text, COALESCE(gt.identity, dr.name, dr.id::text) AS identity,
               COALESCE(d.corrected_classification, d.classification, 'unknown') AS cls,
               {SPLIT_KEY_SQL} || CASE WHEN row_number() OVER (PARTITION BY {SPLIT_KEY_SQL} ORDER BY d.id) > 1
                   THEN '#' || row_number() OVER (PARTITION BY {SPLIT_KEY_SQL} ORDER BY d.id) ELSE '' END AS split_key,
               COALESCE(d.burst_group_id::text, '') AS burst
        FROM detections d
        LEFT JOIN reid_image_files f ON f.image_id = d.image_id
        LEFT JOIN reid_ground_truth gt ON gt.detection_id = d.id
        LEFT JOIN deer dr ON dr.id = d.deer_id AND d.is_reviewed IS TRUE
        WHERE d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
          AND (gt.detection_id IS NOT NULL OR (d.is_reviewed IS TRUE AND d.deer_id IS NOT NULL))
        ORDER BY d.id
        """
    ))
    for det, identity, cls, key, burst in result:
        yield det, sys.intern(identity), sys.intern(cls), key, sys.intern(burst)


def record_split(engine: sa.Engine, detection_ids: list[str], identities: list[str], roles: list,
                 name: str) -> None:
    """Add the detections not recorded yet to ``reid_eval_splits`` with their ``roles`` (5,000 at a time)."""
    s = t.reid_eval_splits
    with engine.begin() as conn:
        for start in range(0, len(roles), 5000):
            part = slice(start, start + 5000)
            known = set(conn.execute(sa.select(s.c.detection_id).where(
                s.c.split_name == name, s.c.detection_id.in_(detection_ids[part]))).scalars())
            rows = [{"split_name": name, "detection_id": d, "identity": i, "role": str(r)}
                    for d, i, r in zip(detection_ids[part], identities[part], roles[part]) if d not in known]
            if rows:
                conn.execute(sa.insert(s), rows)


def query_detections(conn: sa.Connection, split_name: str = "default") -> list[str]:
    """Detections that are validation or test queries of the stored split: kept out of training."""
    return list(conn.execute(sa.text(
        "SELECT detection_id::text FROM reid_eval_splits WHERE split_name = :s AND role IN ('val_query', 'test_query')"),
        {"s": split_name}).scalars())


def live_assignment_stats(conn: sa.Connection) -> dict:
    """What the matcher wrote: unreviewed valid detections, how many have a deer, and (where hidden
    ground truth exists) how many of those are the wrong deer; the buck misidentification rate is
    bucks assigned to a wrong buck / bucks assigned."""
    row = conn.execute(sa.text(
        """
        SELECT count(*) AS detections,
               count(*) FILTER (WHERE d.deer_id IS NOT NULL) AS assigned,
               count(gt.detection_id) AS with_truth,
               count(*) FILTER (WHERE gt.detection_id IS NOT NULL AND d.deer_id IS NOT NULL) AS assigned_with_truth,
               count(*) FILTER (WHERE gt.detection_id IS NOT NULL AND d.deer_id IS NOT NULL
                                AND dr.name IS DISTINCT FROM gt.identity) AS false_matches,
               count(*) FILTER (WHERE gt.detection_id IS NOT NULL AND gt.identity IN
                                (SELECT name FROM deer WHERE name IS NOT NULL)) AS truth_has_profile_row,
               count(*) FILTER (WHERE gt.sex = 'buck' AND d.deer_id IS NOT NULL) AS bucks_assigned,
               count(*) FILTER (WHERE gt.sex = 'buck' AND d.deer_id IS NOT NULL AND dr.sex::text = 'buck'
                                AND dr.name IS DISTINCT FROM gt.identity) AS bucks_misidentified
        FROM detections d
        JOIN reid_crops c ON c.detection_id = d.id AND c.status = 'ok'
        LEFT JOIN reid_ground_truth gt ON gt.detection_id = d.id
        LEFT JOIN deer dr ON dr.id = d.deer_id
        WHERE d.is_reviewed IS NOT TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
        """
    )).mappings().one()
    stats = dict(row)
    stats["assignment_rate"] = stats["assigned"] / stats["detections"] if stats["detections"] else 0.0
    stats["false_match_rate"] = (stats["false_matches"] / stats["assigned_with_truth"]
                                 if stats["assigned_with_truth"] else None)
    stats["buck_misidentification_rate"] = (stats["bucks_misidentified"] / stats["bucks_assigned"]
                                            if stats["bucks_assigned"] else None)
    return stats


def save_evaluation(engine: sa.Engine, name: str, versions: dict, summary: dict, report_json: dict) -> int:
    with engine.begin() as conn:
        return conn.execute(sa.insert(t.reid_evaluations).values(name=name, versions=versions, summary=summary,
                                                                   report=report_json)
                            .returning(t.reid_evaluations.c.id)).scalar_one()
