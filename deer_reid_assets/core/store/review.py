"""The review app's SQL: the queue's raw material, a detection's review state, corrections and their
undo, the candidate deer's crops, and the dashboard's counts. Callers own the transaction."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from deer_reid_assets.core.classes import sql_sex_of

# The detection fields a review decision changes (the existing system's review fields + the deer).
REVIEW_FIELDS = ("deer_id", "is_reviewed", "is_valid", "corrected_classification", "correction_notes",
                 "reviewed_by", "reviewed_at")


def pending_detections(conn: sa.Connection) -> list[dict[str, Any]]:
    """Unreviewed valid detections with a crop, each with the matcher's scored candidates (best first,
    from ``reid_similarity_scores``), its current deer, the threshold the matcher used and when it was
    last skipped (None: never)."""
    rows = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, d.deer_id::text AS deer_id, d.classification,
                  COALESCE(json_agg(json_build_object('deer_id', s.deer_id::text,
                                                      'similarity', s.similarity_score::float8)
                           ORDER BY s.similarity_score DESC, s.deer_id) FILTER (WHERE s.deer_id IS NOT NULL),
                           '[]'::json) AS candidates,
                  max(s.threshold_used)::float8 AS threshold,
                  (SELECT max(c.created_at) FROM reid_review_corrections c
                    WHERE c.detection_id = d.id AND c.action = 'skip' AND c.undone_at IS NULL) AS skipped_at
           FROM detections d
           JOIN reid_crops cr ON cr.detection_id = d.id AND cr.status = 'ok'
           LEFT JOIN reid_similarity_scores s ON s.detection_id = d.id
           WHERE NOT d.is_reviewed AND d.is_valid
           GROUP BY d.id""")).mappings().all()
    return [dict(r) for r in rows]


def pending_from_proposals(conn: sa.Connection) -> list[dict[str, Any]]:
    """Before cut-over (the matcher only proposes): unreviewed valid detections with a crop and a
    proposal, shaped as :func:`pending_detections`' rows from each detection's newest proposal (its
    top candidates, the deer proposed, the run's threshold); ``current_deer_id`` is the existing
    system's deer."""
    rows = conn.execute(sa.text(
        """WITH latest AS (
               SELECT DISTINCT ON (p.detection_id) p.detection_id, p.proposed_deer_id, p.current_deer_id,
                      p.candidates, r.threshold, l.best_deer_id, p.similarity
               FROM reid_match_proposals p JOIN reid_assignment_runs r ON r.run_id = p.run_id
               LEFT JOIN reid_assignment_log l ON l.run_id = p.run_id AND l.detection_id = p.detection_id
               ORDER BY p.detection_id, r.created_at DESC, p.run_id DESC)
           SELECT d.id::text AS detection_id, lt.proposed_deer_id::text AS deer_id, d.classification,
                  CASE WHEN jsonb_array_length(COALESCE(lt.candidates, '[]'::jsonb)) > 0 THEN lt.candidates::json
                       WHEN lt.best_deer_id IS NOT NULL THEN json_build_array(json_build_object(
                           'deer_id', lt.best_deer_id::text, 'similarity', lt.similarity))
                       ELSE '[]'::json END AS candidates,
                  lt.threshold::float8 AS threshold, lt.current_deer_id::text AS current_deer_id,
                  (SELECT max(c.created_at) FROM reid_review_corrections c
                    WHERE c.detection_id = d.id AND c.action = 'skip' AND c.undone_at IS NULL) AS skipped_at
           FROM detections d
           JOIN reid_crops cr ON cr.detection_id = d.id AND cr.status = 'ok'
           JOIN latest lt ON lt.detection_id = d.id
           WHERE NOT d.is_reviewed AND d.is_valid""")).mappings().all()
    return [dict(r) for r in rows]


def detection_state(conn: sa.Connection, detection_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    """The detection's deer and review fields (row-locked with ``lock``); None when it does not exist."""
    sql = (f"SELECT {', '.join(REVIEW_FIELDS)} FROM detections WHERE id = CAST(:d AS uuid)"
           + (" FOR UPDATE" if lock else ""))
    row = conn.execute(sa.text(sql), {"d": detection_id}).mappings().first()
    if row is None:
        return None
    state = dict(row)
    state["deer_id"] = str(state["deer_id"]) if state["deer_id"] is not None else None
    state["reviewed_at"] = state["reviewed_at"].isoformat() if state["reviewed_at"] is not None else None
    return state


def write_review_fields(conn: sa.Connection, detection_id: str, state: dict[str, Any]) -> None:
    """Set the detection's deer and review fields to ``state`` (keys: REVIEW_FIELDS)."""
    conn.execute(sa.text(
        """UPDATE detections SET deer_id = CAST(:deer_id AS uuid), is_reviewed = :is_reviewed, is_valid = :is_valid,
                  corrected_classification = :corrected_classification, correction_notes = :correction_notes,
                  reviewed_by = :reviewed_by, reviewed_at = CAST(:reviewed_at AS timestamptz)
           WHERE id = CAST(:id AS uuid)"""), {**{k: state.get(k) for k in REVIEW_FIELDS}, "id": detection_id})


def deer_exists(conn: sa.Connection, deer_id: str) -> bool:
    return conn.execute(sa.text("SELECT 1 FROM deer WHERE id::text = :d"), {"d": deer_id}).first() is not None


def create_deer(conn: sa.Connection, name: str, sex: str) -> str:
    """A new deer row (client-side id and sighting dates, as the existing system's rows have); a buck
    age class (mature / mid / young) gives a buck."""
    from deer_reid_assets.core.classes import sex_of
    from deer_reid_assets.core.store import schema as t

    return str(conn.execute(sa.insert(t.deer).values(name=name, sex=sex_of(sex), notes="created in the review app")
                            .returning(t.deer.c.id)).scalar_one())


def delete_deer_if_unused(conn: sa.Connection, deer_id: str) -> bool:
    """Delete a deer no detection points at (undo of 'new deer'); False when one still does."""
    return conn.execute(sa.text(
        """DELETE FROM deer WHERE id = CAST(:d AS uuid)
           AND NOT EXISTS (SELECT 1 FROM detections WHERE deer_id = CAST(:d AS uuid))"""), {"d": deer_id}).rowcount > 0


def insert_correction(conn: sa.Connection, *, detection_id: str, action: str, reviewer: str, queue_reason: str | None,
                      proposed_deer_id: str | None, before: dict, after: dict, operation_id: str | None = None) -> int:
    return int(conn.execute(sa.text(
        """INSERT INTO reid_review_corrections (detection_id, action, reviewer, queue_reason, proposed_deer_id,
                                                before, after, operation_id)
           VALUES (CAST(:d AS uuid), :a, :r, :q, CAST(:p AS uuid), CAST(:b AS jsonb), CAST(:af AS jsonb),
                   CAST(:o AS uuid))
           RETURNING id"""),
        {"d": detection_id, "a": action, "r": reviewer, "q": queue_reason, "p": proposed_deer_id,
         "b": json.dumps(before), "af": json.dumps(after), "o": operation_id}).scalar_one())


def last_correction(conn: sa.Connection, reviewer: str) -> dict[str, Any] | None:
    """The reviewer's newest correction not yet undone, row-locked; None when there is none."""
    row = conn.execute(sa.text(
        """SELECT id, detection_id::text AS detection_id, action, queue_reason, before, after,
                  operation_id::text AS operation_id, created_at
           FROM reid_review_corrections
           WHERE reviewer = :r AND undone_at IS NULL ORDER BY id DESC LIMIT 1 FOR UPDATE"""),
        {"r": reviewer}).mappings().first()
    return dict(row) if row else None


def mark_undone(conn: sa.Connection, correction_id: int) -> None:
    conn.execute(sa.text("UPDATE reid_review_corrections SET undone_at = now() WHERE id = :i"), {"i": correction_id})


def corrections(conn: sa.Connection, detection_id: str | None = None) -> list[dict[str, Any]]:
    """Corrections (undone ones included, oldest first), of one detection or all."""
    rows = conn.execute(sa.text(
        """SELECT id, detection_id::text AS detection_id, action, reviewer, created_at, queue_reason,
                  proposed_deer_id::text AS proposed_deer_id, before, after, undone_at, operation_id::text AS operation_id
           FROM reid_review_corrections WHERE (CAST(:d AS uuid) IS NULL OR detection_id = CAST(:d AS uuid))
           ORDER BY id"""), {"d": detection_id}).mappings().all()
    return [dict(r) for r in rows]


def latest_decisions(conn: sa.Connection) -> list[dict[str, Any]]:
    """Per detection, the newest correction that is a decision (not a skip) and not undone."""
    rows = conn.execute(sa.text(
        """SELECT DISTINCT ON (detection_id) detection_id::text AS detection_id, action, queue_reason,
                  proposed_deer_id::text AS proposed_deer_id, after ->> 'deer_id' AS final_deer_id, created_at
           FROM reid_review_corrections WHERE undone_at IS NULL AND action <> 'skip'
           ORDER BY detection_id, id DESC""")).mappings().all()
    return [dict(r) for r in rows]


def deer_identities(conn: sa.Connection, deer_ids: list[str]) -> dict[str, str]:
    """{deer id: its identity in a training manifest} (the name, else the id, as ``triplet_data`` labels it)."""
    if not deer_ids:
        return {}
    rows = conn.execute(sa.text("SELECT id::text, COALESCE(name, id::text) FROM deer WHERE id::text = ANY(:ids)"),
                        {"ids": list(deer_ids)})
    return dict(rows.all())


def crop_file(conn: sa.Connection, detection_id: str) -> str | None:
    """The stored crop path of a detection's ok crop (None: no crop)."""
    return conn.execute(sa.text(
        "SELECT path FROM reid_crops WHERE detection_id::text = :d AND status = 'ok'"), {"d": detection_id}).scalar()


def deer_summaries(conn: sa.Connection, deer_ids: list[str], crops_each: int = 3) -> dict[str, dict[str, Any]]:
    """Name, sex, sightings (detections pointing at it), cameras and a few crop ids per deer, reviewed
    detections first."""
    if not deer_ids:
        return {}
    rows = conn.execute(sa.text(
        """SELECT dr.id::text AS deer_id, dr.name, dr.sex::text AS sex,
                  (SELECT count(*) FROM detections x WHERE x.deer_id = dr.id) AS sightings,
                  (SELECT count(DISTINCT i.location_id) FROM detections x JOIN images i ON i.id = x.image_id
                    WHERE x.deer_id = dr.id) AS cameras,
                  ARRAY(SELECT x.id::text FROM detections x JOIN reid_crops c ON c.detection_id = x.id AND c.status = 'ok'
                        WHERE x.deer_id = dr.id ORDER BY x.is_reviewed DESC, x.id LIMIT :n) AS crops
           FROM deer dr WHERE dr.id::text = ANY(:ids)"""), {"ids": list(deer_ids), "n": crops_each}).mappings().all()
    return {r["deer_id"]: dict(r) for r in rows}


def all_deer(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every deer (id, name, sex), by name: the 'choose another deer' list."""
    rows = conn.execute(sa.text("SELECT id::text AS deer_id, name, sex::text AS sex FROM deer ORDER BY name, id"))
    return [dict(r) for r in rows.mappings()]


def detection_info(conn: sa.Connection, detection_id: str) -> dict[str, Any] | None:
    row = conn.execute(sa.text(
        """SELECT d.id::text AS detection_id, d.classification, d.confidence, i.timestamp, l.name AS camera
           FROM detections d JOIN images i ON i.id = d.image_id LEFT JOIN locations l ON l.id = i.location_id
           WHERE d.id::text = :d"""), {"d": detection_id}).mappings().first()
    return dict(row) if row else None


def dashboard_counts(conn: sa.Connection) -> dict[str, int]:
    """Valid detections, those with a deer, unreviewed ones with a crop (the backlog), reviewed ones."""
    row = conn.execute(sa.text(
        """SELECT count(*) FILTER (WHERE d.is_valid) AS valid,
                  count(*) FILTER (WHERE d.is_valid AND d.deer_id IS NOT NULL) AS with_deer,
                  count(*) FILTER (WHERE d.is_valid AND NOT d.is_reviewed AND c.status = 'ok') AS backlog,
                  count(*) FILTER (WHERE d.is_reviewed) AS reviewed
           FROM detections d LEFT JOIN reid_crops c ON c.detection_id = d.id""")).mappings().one()
    return {k: int(v) for k, v in row.items()}


def corrections_per_week(conn: sa.Connection) -> list[tuple[str, int]]:
    """(ISO week start, decisions) for every week with a decision (skips and undone ones excluded)."""
    rows = conn.execute(sa.text(
        """SELECT to_char(date_trunc('week', created_at), 'YYYY-MM-DD') AS week, count(*)
           FROM reid_review_corrections WHERE undone_at IS NULL AND action <> 'skip' GROUP BY 1 ORDER BY 1"""))
    return [(w, int(n)) for w, n in rows]


def decisions_since(conn: sa.Connection, after_id: int) -> tuple[int, int]:
    """(decisions with id > after_id that are not skips nor undone, the newest correction id or after_id)."""
    n, newest = conn.execute(sa.text(
        """SELECT count(*) FILTER (WHERE action <> 'skip' AND undone_at IS NULL), max(id)
           FROM reid_review_corrections WHERE id > :a"""), {"a": after_id}).one()
    return int(n), int(newest) if newest is not None else after_id


def deer_page(conn: sa.Connection, deer_id: str, crops: int = 48) -> dict[str, Any] | None:
    """A deer's name and sex, its crops (newest first, reviewed marked) and its sightings per camera
    and month; None when there is no such deer."""
    head = conn.execute(sa.text("SELECT id::text AS deer_id, name, sex::text AS sex, notes FROM deer WHERE id::text = :d"),
                        {"d": deer_id}).mappings().first()
    if head is None:
        return None
    gallery = conn.execute(sa.text(
        """SELECT x.id::text AS detection_id, x.is_reviewed, i.timestamp, l.name AS camera
           FROM detections x JOIN images i ON i.id = x.image_id LEFT JOIN locations l ON l.id = i.location_id
           JOIN reid_crops c ON c.detection_id = x.id AND c.status = 'ok'
           WHERE x.deer_id::text = :d ORDER BY i.timestamp DESC, x.id LIMIT :n"""), {"d": deer_id, "n": crops})
    sightings = conn.execute(sa.text(
        """SELECT COALESCE(l.name, 'unknown') AS camera, to_char(date_trunc('month', i.timestamp), 'YYYY-MM') AS month,
                  count(*) AS sightings
           FROM detections x JOIN images i ON i.id = x.image_id LEFT JOIN locations l ON l.id = i.location_id
           WHERE x.deer_id::text = :d GROUP BY 1, 2 ORDER BY 2, 1"""), {"d": deer_id})
    return {**dict(head), "gallery": [dict(r) for r in gallery.mappings()],
            "sightings": [dict(r) for r in sightings.mappings()]}


def evaluation_history(conn: sa.Connection, limit: int = 12) -> list[dict[str, Any]]:
    """The newest ``reid_evaluation`` runs (oldest first): when, which versions, their test summary, the
    test queries' buck misidentification rate and the live one at the time (None where not stored)."""
    rows = conn.execute(sa.text(
        """SELECT * FROM (SELECT id, created_at, versions, summary,
                                 (report #>> '{test,buck_misidentification,rate}')::float AS buck_misid_rate,
                                 (report #>> '{live_assignments,buck_misidentification_rate}')::float
                                     AS live_buck_misid_rate
                          FROM reid_evaluations
                          WHERE name = 'reid_evaluation' ORDER BY id DESC LIMIT :n) x ORDER BY id"""), {"n": limit})
    return [dict(r) for r in rows.mappings()]


def reviewed_buck_assignments(conn: sa.Connection) -> dict[str, int]:
    """Reviewed buck detections (a person's class) the matcher had given a deer, per their latest
    decision (queue reviews, not merges or splits): how many, and how many a person moved from that
    buck to another buck."""
    row = conn.execute(sa.text(
        f"""WITH latest AS (
                SELECT DISTINCT ON (detection_id) detection_id, before ->> 'deer_id' AS before_deer,
                       after ->> 'deer_id' AS after_deer
                FROM reid_review_corrections
                WHERE undone_at IS NULL AND action <> 'skip' AND COALESCE(queue_reason, '') NOT IN ('merge', 'split')
                ORDER BY detection_id, id DESC)
            SELECT count(*) AS bucks_assigned,
                   count(*) FILTER (WHERE l.after_deer IS DISTINCT FROM l.before_deer AND b.sex::text = 'buck'
                                    AND a.sex::text = 'buck') AS bucks_misidentified
            FROM latest l JOIN detections d ON d.id = l.detection_id
            JOIN deer b ON b.id::text = l.before_deer
            LEFT JOIN deer a ON a.id::text = l.after_deer
            WHERE d.is_reviewed AND d.is_valid IS NOT FALSE
                  AND {sql_sex_of("COALESCE(d.corrected_classification, d.classification)")} = 'buck'""")).mappings().one()
    return dict(row)
