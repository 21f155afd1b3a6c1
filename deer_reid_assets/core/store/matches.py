"""Matching runs' SQL: ``reid_assignment_runs`` and their log (the previous deer of every detection, for
rollback), ``reid_similarity_scores``, ``detections.deer_id`` and the deer's sighting statistics
(``core/matching.py`` decides with it; its candidates come from ``store/candidates.py``)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t

MATCH_LOCK = 0x5EED_0A55  # advisory lock: one matcher at a time


def one_matcher(conn: sa.Connection) -> None:
    """Take the matcher's lock until the transaction ends: a second run waits, then sees the first's result."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MATCH_LOCK})


def start_run(conn: sa.Connection, run_id: str, method: str, models: dict[str, float], threshold: float) -> None:
    """The run's row, with no counts yet (:func:`finish_run` sets them)."""
    conn.execute(sa.insert(t.reid_assignment_runs).values(
        run_id=run_id, method=method, versions={"embeddings": models}, threshold=threshold, config={},
        n_considered=0, n_assigned=0))


def finish_run(conn: sa.Connection, run_id: str, config: dict, considered: int, assigned: int) -> None:
    """The run's configuration and counts, once every chunk is written."""
    r = t.reid_assignment_runs
    conn.execute(sa.update(r).where(r.c.run_id == run_id).values(config=config, n_considered=considered,
                                                                   n_assigned=assigned))


def log_decisions(conn: sa.Connection, log: list[dict]) -> None:
    """``reid_assignment_log`` rows: per detection its previous, best and new deer and the similarity."""
    conn.execute(sa.insert(t.reid_assignment_log), log)


def clear_matched(conn: sa.Connection, detection_ids: list[str]) -> None:
    """Unset ``matched`` on every score row of ``detection_ids`` (before this run's scores are written)."""
    s = t.reid_similarity_scores
    conn.execute(sa.update(s).where(s.c.detection_id.in_(detection_ids), s.c.matched.is_(True)).values(matched=False))


_UPSERT_SCORES = sa.text(
    f"""
    INSERT INTO reid_similarity_scores (id, detection_id, deer_id, similarity_score, sex_match, matched,
                                        threshold_used, detection_classification, deer_sex, calculated_at)
    SELECT x.*, now() FROM unnest(CAST(:id AS uuid[]), CAST(:detection_id AS uuid[]), CAST(:deer_id AS uuid[]),
                                  CAST(:similarity_score AS numeric[]), CAST(:sex_match AS boolean[]),
                                  CAST(:matched AS boolean[]), CAST(:threshold_used AS numeric[]),
                                  CAST(:detection_classification AS text[]), CAST(:deer_sex AS text[])) AS x
    ON CONFLICT ON CONSTRAINT {t.SIMILARITY_UNIQUE} DO UPDATE SET
        similarity_score = EXCLUDED.similarity_score, sex_match = EXCLUDED.sex_match, matched = EXCLUDED.matched,
        threshold_used = EXCLUDED.threshold_used, detection_classification = EXCLUDED.detection_classification,
        deer_sex = EXCLUDED.deer_sex, calculated_at = EXCLUDED.calculated_at
    """
)
_SCORE_COLUMNS = ("detection_id", "deer_id", "similarity_score", "sex_match", "matched", "threshold_used",
                  "detection_classification", "deer_sex")


def upsert_scores(conn: sa.Connection, scores: list[dict]) -> None:
    """reid_similarity_scores rows in one statement, one array per column (client-side ids, as the
    existing system's tables have no defaults): neither a round trip nor a compiled VALUES row each."""
    if scores:
        conn.execute(_UPSERT_SCORES, {"id": [str(uuid.uuid4()) for _ in scores],
                                      **{c: [row[c] for row in scores] for c in _SCORE_COLUMNS}})


def set_deer(conn: sa.Connection, changes: list[tuple[str, str | None]]) -> None:
    """Set each detection's deer: one statement for the whole list (not a round trip per row)."""
    if not changes:
        return
    conn.execute(sa.text(
        "UPDATE detections SET deer_id = x.new FROM unnest(CAST(:dets AS uuid[]), CAST(:news AS uuid[])) "
        "AS x(det, new) WHERE detections.id = x.det"),
        {"dets": [str(det) for det, _ in changes], "news": [None if new is None else str(new) for _, new in changes]})


def run_log(conn: sa.Connection, run_id: str) -> list[sa.Row]:
    """(detection id, previous deer id) of every detection ``run_id`` logged."""
    log = t.reid_assignment_log
    return conn.execute(sa.select(log.c.detection_id, log.c.previous_deer_id).where(log.c.run_id == run_id)).all()


def reviewed_since(conn: sa.Connection, run_id: str) -> set[str]:
    """The detections ``run_id`` logged that are reviewed now, locked until the transaction ends."""
    log, d = t.reid_assignment_log, t.detections
    return set(conn.execute(
        sa.select(d.c.id).where(d.c.id.in_(sa.select(log.c.detection_id).where(log.c.run_id == run_id)),
                                d.c.is_reviewed.is_(True)).with_for_update()
    ).scalars())


def refresh_sighting_stats(conn: sa.Connection) -> None:
    """deer.sighting_count / first_seen / last_seen from the detections assigned to each deer."""
    conn.execute(sa.text(
        """
        UPDATE deer SET sighting_count = COALESCE(s.n, 0), first_seen = COALESCE(s.first_seen, d0.first_seen),
                        last_seen = COALESCE(s.last_seen, d0.last_seen)
        FROM deer d0
        LEFT JOIN (
            SELECT det.deer_id, count(*) AS n, min(i."timestamp") AS first_seen, max(i."timestamp") AS last_seen
            FROM detections det JOIN images i ON i.id = det.image_id
            WHERE det.deer_id IS NOT NULL AND det.is_valid IS NOT FALSE
            GROUP BY det.deer_id
        ) s ON s.deer_id = d0.id
        WHERE deer.id = d0.id
        """
    ))
