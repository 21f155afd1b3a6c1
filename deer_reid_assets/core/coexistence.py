"""Living beside the existing system's worker, then taking over live matching (``deer-reid cutover``).

* Until cut-over (``reid_live_matching.owner = 'existing_system'``, set by ``db migrate --adopt``) the
  worker owns what it reads and writes: the deer table's vectors and ``embedding_version``,
  ``detections.deer_id``, ``reid_similarity_scores`` and the deer's sighting statistics. This
  pipeline keeps its profiles in ``reid_deer_profiles`` and its matcher writes *proposals*
  (``reid_match_proposals``), nothing else.
* ``cutover`` keeps every deer's vectors and every detection's deer, mirrors the published profiles
  onto the deer columns, applies the latest proposals and hands live matching to this pipeline.
  ``cutover --undo`` puts back what was kept.
* Reviewed (and manual) assignments are never changed. The worker's automatic assignments (an
  unreviewed ``deer_id`` this pipeline did not write) change only with ``reassign``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

EXISTING, OURS = "existing_system", "deer_reid"


@dataclass(frozen=True)
class LiveMode:
    owner: str
    reassign: bool

    @property
    def ours(self) -> bool:
        return self.owner == OURS


def adopted(conn: sa.Connection) -> bool:
    """Whether this database is the existing system's (adopted with ``db migrate --adopt``/``--baseline``),
    as opposed to a stand-alone install where every assignment is this pipeline's."""
    if conn.execute(sa.text("SELECT to_regclass('reid_schema_migrations')")).scalar() is None:
        return False
    return conn.execute(sa.text("SELECT count(*) FROM reid_schema_migrations WHERE baseline AND version = '001'")
                        ).scalar() > 0


def live_mode(conn: sa.Connection) -> LiveMode:
    if conn.execute(sa.text("SELECT to_regclass('reid_live_matching')")).scalar() is None:
        return LiveMode(OURS, False)
    row = conn.execute(sa.text("SELECT owner, reassign FROM reid_live_matching")).first()
    return LiveMode(row.owner, row.reassign) if row else LiveMode(OURS, False)


def hand_to_existing_system(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE reid_live_matching SET owner = :o, reassign = FALSE, changed_at = now()"), {"o": EXISTING})


def protected_detections(conn: sa.Connection) -> set[str]:
    """Unreviewed detections whose deer the worker chose (not this pipeline's last write); none on a
    stand-alone install."""
    if not adopted(conn):
        return set()
    rows = conn.execute(sa.text(
        """SELECT d.id::text FROM detections d
           WHERE d.is_reviewed IS NOT TRUE AND d.deer_id IS NOT NULL AND NOT EXISTS (
               SELECT 1 FROM reid_assignment_log l JOIN reid_assignment_runs r ON r.run_id = l.run_id
               WHERE l.detection_id = d.id AND l.new_deer_id = d.deer_id
                 AND NOT EXISTS (SELECT 1 FROM reid_match_proposals p
                                 WHERE p.run_id = l.run_id AND p.detection_id = l.detection_id))"""))
    return set(rows.scalars())


def proposed_only(conn: sa.Connection, run_id: str) -> bool:
    """Whether matching run ``run_id`` only proposed (made while the existing system owned live matching)."""
    return conn.execute(sa.text("SELECT 1 FROM reid_match_proposals WHERE run_id = :r LIMIT 1"), {"r": run_id}).first() \
        is not None


def record_proposals(conn: sa.Connection, run_id: str, log: list[dict],
                     candidates: dict[str, list[dict]] | None = None) -> None:
    """The run's proposals; ``candidates``: per detection its top candidates ``[{deer_id, similarity}]``,
    best first (what the review queue shows before cut-over)."""
    if log:  # one statement, one array per column (not a round trip per proposal)
        conn.execute(sa.text(
            "INSERT INTO reid_match_proposals (run_id, detection_id, current_deer_id, proposed_deer_id, similarity, "
            "candidates) SELECT :run_id, x.* FROM unnest(CAST(:dets AS uuid[]), CAST(:current AS uuid[]), "
            "CAST(:proposed AS uuid[]), CAST(:similarity AS double precision[]), CAST(:candidates AS jsonb[])) AS x"),
            {"run_id": run_id, "dets": [str(r["detection_id"]) for r in log],
             "current": [_text_or_none(r["previous_deer_id"]) for r in log],
             "proposed": [_text_or_none(r["new_deer_id"]) for r in log],
             "similarity": [r["similarity"] for r in log],
             "candidates": [json.dumps((candidates or {}).get(r["detection_id"], [])) for r in log]})


def _text_or_none(value) -> str | None:
    return None if value is None else str(value)


@dataclass
class CutoverReport:
    cutover_id: int
    deer_kept: int
    profiles_mirrored: int
    assignments_written: int
    kept_worker_assignments: int


def cutover(engine: sa.Engine, *, reassign: bool = False) -> CutoverReport:
    """Hand live matching to this pipeline, keeping what it replaces; one transaction."""
    from deer_reid_assets.core import families, matching
    from deer_reid_assets.core.embed.versions import published_version

    with engine.begin() as conn:
        conn.execute(sa.text("SELECT * FROM reid_live_matching FOR UPDATE"))
        if live_mode(conn).ours:
            raise ValueError("live matching is already this pipeline's (undo with `deer-reid cutover --undo`)")
        protected = set() if reassign else protected_detections(conn)
        cut = conn.execute(sa.text("INSERT INTO reid_cutovers (reassign) VALUES (:r) RETURNING id"), {"r": reassign}).scalar()
        kept = conn.execute(sa.text(
            """INSERT INTO reid_cutover_kept_deer SELECT :c, id, feature_vector, feature_vector_multiscale,
                      feature_vector_efficientnet, embedding_version FROM deer"""), {"c": cut}).rowcount
        conn.execute(sa.text("INSERT INTO reid_cutover_kept_assignments SELECT :c, id, deer_id FROM detections"),
                     {"c": cut})
        conn.execute(sa.text("UPDATE reid_live_matching SET owner = :o, reassign = :r, changed_at = now()"),
                     {"o": OURS, "r": reassign})
        versions = {f: v for f in families.FAMILIES if (v := published_version(conn, f)) is not None}
        if versions:
            matching._mirror(conn, versions)
        mirrored = conn.execute(sa.text("SELECT count(*) FROM reid_deer_profiles WHERE version = ANY(:v)"),
                                {"v": list(versions.values())}).scalar()
        latest = conn.execute(sa.text(
            """SELECT DISTINCT ON (p.detection_id) p.detection_id::text, p.proposed_deer_id::text
               FROM reid_match_proposals p JOIN reid_assignment_runs r ON r.run_id = p.run_id
               JOIN detections d ON d.id = p.detection_id
               WHERE d.is_reviewed IS NOT TRUE ORDER BY p.detection_id, r.created_at DESC""")).all()
        changes = [(det, new) for det, new in latest if det not in protected]
        current = dict(conn.execute(sa.text("SELECT id::text, deer_id::text FROM detections")).all())
        changes = [(det, new) for det, new in changes if current.get(det) != new]
        matching._apply(conn, changes)
        matching.refresh_sighting_stats(conn)
    return CutoverReport(cut, kept, mirrored, len(changes), len(protected))


def undo_cutover(engine: sa.Engine) -> int:
    """Put back the deer vectors and the assignments the last cut-over kept (detections a person has
    reviewed since keep the person's decision); live matching goes back to the existing system.
    Returns how many detections were put back."""
    from deer_reid_assets.core import matching

    with engine.begin() as conn:
        conn.execute(sa.text("SELECT * FROM reid_live_matching FOR UPDATE"))
        cut = conn.execute(sa.text(
            "SELECT id FROM reid_cutovers WHERE undone_at IS NULL ORDER BY id DESC LIMIT 1")).scalar()
        if cut is None or not live_mode(conn).ours:
            raise ValueError("there is no cut-over to undo")
        conn.execute(sa.text(
            """UPDATE deer SET feature_vector = k.feature_vector, feature_vector_multiscale = k.feature_vector_multiscale,
                      feature_vector_efficientnet = k.feature_vector_efficientnet, embedding_version = k.embedding_version
               FROM reid_cutover_kept_deer k WHERE k.cutover_id = :c AND k.deer_id = deer.id"""), {"c": cut})
        restored = conn.execute(sa.text(
            """UPDATE detections SET deer_id = k.deer_id FROM reid_cutover_kept_assignments k
               WHERE k.cutover_id = :c AND k.detection_id = detections.id AND detections.is_reviewed IS NOT TRUE
                 AND detections.deer_id IS DISTINCT FROM k.deer_id"""), {"c": cut}).rowcount
        conn.execute(sa.text("UPDATE reid_cutovers SET undone_at = now() WHERE id = :c"), {"c": cut})
        hand_to_existing_system(conn)
        matching.refresh_sighting_stats(conn)
    return restored
