"""Deer profiles and the matcher, in the database.

* A *labelled* detection is one a person identified: ``deer_id`` set, ``is_reviewed`` and not
  marked invalid. A deer's profile for an embedding version is the L2-normalised mean of the
  embeddings of its labelled detections (``reid_deer_profiles``), mirrored onto the deer table's
  column for that model family (``deer.feature_vector`` for the ResNet50 baseline, ...) so the
  existing system sees it. Vectors that were on the deer table before this pipeline first wrote
  there are kept as profile version ``legacy``.
* The matcher takes every unreviewed valid detection with an embedding, retrieves its nearest
  profiles with pgvector (cosine distance ``<=>``) among profiles of a compatible sex (buck with
  buck, doe with doe; fawn/unknown detections and unknown-sex profiles with all), and assigns the
  nearest when its similarity >= threshold. It writes ``detections.deer_id`` and
  ``reid_similarity_scores`` as the existing system does, and logs each run with the previous value
  of every detection so a run can be audited and rolled back.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core import coexistence, families
from deer_reid_assets.core.classes import sex_of, sql_sex_of
from deer_reid_assets.core.embed.versions import load_embeddings, published_versions
from deer_reid_assets.core.store import schema as t

LEGACY_PROFILE_VERSION = "legacy"


@dataclass
class ProfileReport:
    version: str
    profiles: int
    labelled_detections: int
    deer_without_embeddings: int
    legacy_vectors_saved: int


@dataclass
class AssignReport:
    run_id: str
    considered: int
    assigned: int
    changed: int
    no_candidate: int
    threshold: float
    rescored: int = 0  # detections re-scored against every profile after the top-k bound check
    proposals_only: bool = False  # the existing system owns live matching (see core/coexistence.py)
    antler_vetoes: int = 0  # detections the antler constraint kept from their best (above-threshold) deer

    @property
    def assignment_rate(self) -> float:
        return self.assigned / self.considered if self.considered else 0.0


def labelled_detection_ids(conn: sa.Connection) -> list[tuple[str, str]]:
    d = t.detections
    rows = conn.execute(
        sa.select(d.c.id, d.c.deer_id).where(d.c.deer_id.isnot(None), d.c.is_reviewed.is_(True), d.c.is_valid.isnot(False),
                                             d.c.is_duplicate.isnot(True))
    )
    return [(r[0], r[1]) for r in rows]


def build_profiles(engine: sa.Engine, version: str, family: str, *, mirror_to_deer_table: bool = True) -> ProfileReport:
    """(Re)build the profiles of ``version`` in one transaction (and mirror them onto the deer table)."""
    with engine.begin() as conn:
        _one_profile_writer(conn)
        labelled = labelled_detection_ids(conn)
        ids, vectors = load_embeddings(conn, version)
        index = {d: i for i, d in enumerate(ids)}
        members: dict[str, list[int]] = defaultdict(list)
        for det, deer_id in labelled:
            if det in index:
                members[deer_id].append(index[det])
        all_labelled_deer = {deer_id for _, deer_id in labelled}
        rows = []
        for deer_id, idx in sorted(members.items()):
            mean = vectors[idx].mean(axis=0)
            norm = float(np.linalg.norm(mean))
            if norm == 0.0 or not np.isfinite(norm):
                continue
            rows.append({"version": version, "deer_id": deer_id, "model_family": family, "vector": mean / norm,
                         "n_detections": len(idx)})
        p = t.reid_deer_profiles
        conn.execute(sa.delete(p).where(p.c.version == version))
        if rows:
            conn.execute(sa.insert(p), rows)
        saved = _mirror(conn, {family: version}) if mirror_to_deer_table else 0
    return ProfileReport(version=version, profiles=len(rows), labelled_detections=len(labelled),
                         deer_without_embeddings=len(all_labelled_deer - set(members)), legacy_vectors_saved=saved)


def legacy_version(family: str) -> str:
    """Profile version holding the vectors a deer-table column had before this pipeline wrote to it."""
    return f"{LEGACY_PROFILE_VERSION}-{families.get(family).code}"


def mirror_profiles(engine: sa.Engine, versions: dict[str, str]) -> str:
    """Write the profiles of ``{family: version}`` onto the deer table's columns in one transaction;
    returns what ``deer.embedding_version`` now says (see ``_mirror``)."""
    with engine.begin() as conn:
        _one_profile_writer(conn)
        _mirror(conn, versions)
        return profile_set_id(versions)


def _one_profile_writer(conn: sa.Connection) -> None:
    """Two rebuilds at once take turns (each replaces the profiles as a whole) instead of colliding."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PROFILE_LOCK})


def profile_set_id(versions: dict[str, str]) -> str:
    """The version itself for one model; ``ps-<hash>`` (a reid_profile_sets row) for several."""
    if len(versions) == 1:
        return next(iter(versions.values()))
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()
    return f"ps-{digest[:10]}"


def _mirror(conn: sa.Connection, versions: dict[str, str]) -> int:
    """Mirror profiles onto deer.<column> for each family and set deer.embedding_version to the
    profile set; the first time a column is written, its previous vectors are kept as legacy."""
    set_id = profile_set_id(versions)
    columns = {families.get(f).deer_column: v for f, v in versions.items()}
    saved = sum(_save_legacy_vectors(conn, family) for family in versions)
    conn.execute(pg_insert(t.reid_profile_sets).values(id=set_id, versions=columns).on_conflict_do_nothing())
    p = t.reid_deer_profiles
    if not coexistence.live_mode(conn).ours:  # its worker reads these columns: not before cut-over
        return saved
    for family, version in versions.items():
        column = families.get(family).deer_column
        rows = conn.execute(sa.select(p.c.deer_id, p.c.vector).where(p.c.version == version)).all()
        if rows:
            conn.execute(
                sa.update(t.deer).where(t.deer.c.id == sa.bindparam("pid"))
                .values({column: sa.bindparam("vec"), "embedding_version": set_id, "updated_at": sa.func.now()}),
                [{"pid": r[0], "vec": r[1]} for r in rows],
            )
    return saved


def _save_legacy_vectors(conn: sa.Connection, family: str) -> int:
    """Before this pipeline first writes a deer-table column, keep the vectors it holds."""
    column = families.get(family).deer_column
    written_before = conn.execute(
        sa.select(t.reid_profile_sets.c.id).where(t.reid_profile_sets.c.versions.has_key(column)).limit(1)
    ).first()
    if written_before:
        return 0
    col = getattr(t.deer.c, column)
    legacy = conn.execute(sa.select(t.deer.c.id, col).where(col.isnot(None))).all()
    if not legacy:
        return 0
    stmt = pg_insert(t.reid_deer_profiles).values(
        [{"version": legacy_version(family), "deer_id": r[0], "model_family": family, "vector": r[1], "n_detections": 0}
         for r in legacy]
    ).on_conflict_do_nothing()
    return conn.execute(stmt).rowcount


_TOP_K_SQL = (
    """
    SELECT q.id::text AS detection_id, q.deer_id::text AS previous_deer_id, q.cls AS classification,
           c.deer_id::text AS candidate_id, c.sex AS candidate_sex, c.similarity
    FROM (
        SELECT d.id, d.deer_id, COALESCE(d.corrected_classification, d.classification, 'unknown') AS cls,
               {sex} AS qsex, e.embedding
        FROM detections d
        JOIN reid_embeddings e ON e.detection_id = d.id AND e.version = :version
        WHERE d.is_reviewed IS NOT TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE {only}
    ) q
    LEFT JOIN LATERAL (
        SELECT p.deer_id, dr.sex::text AS sex, 1 - (p.vector <=> q.embedding) AS similarity
        FROM reid_deer_profiles p
        JOIN deer dr ON dr.id = p.deer_id
        WHERE p.version = :version
          AND (q.qsex NOT IN ('buck', 'doe') OR dr.sex::text = q.qsex OR dr.sex::text = 'unknown')
        ORDER BY p.vector <=> q.embedding, p.deer_id
        LIMIT :top_k
    ) c ON TRUE
    """.replace("{sex}", sql_sex_of("COALESCE(d.corrected_classification, d.classification)"))
)
_TOP_K = sa.text(_TOP_K_SQL.replace("{only}", ""))
"""Top-k profiles of a compatible sex for every unreviewed detection, by pgvector cosine distance."""
_TOP_K_OF = sa.text(_TOP_K_SQL.replace("{only}", "AND d.id = ANY(CAST(:only AS uuid[]))"))
"""The same for the given detections only (an upload's new detections)."""

_PAIR_SIMILARITY = sa.text(
    """
    SELECT x.det AS detection_id, x.deer AS candidate_id, 1 - (p.vector <=> e.embedding) AS similarity
    FROM unnest(CAST(:dets AS uuid[]), CAST(:deers AS uuid[])) AS x(det, deer)
    JOIN reid_embeddings e ON e.detection_id = x.det AND e.version = :version
    JOIN reid_deer_profiles p ON p.deer_id = x.deer AND p.version = :version
    """
)
"""Exact similarity of given (detection, profile) pairs in one model."""


@dataclass
class _Candidate:
    deer_id: str
    sex: str
    similarity: float  # combined over the models


def _retrieve(conn: sa.Connection, models: dict[str, float], top_k: int | None, only: list[str] | None = None):
    """Per detection: previous deer, classification, and candidates with their exact combined
    similarity. Candidates are the union of each model's pgvector top-k; a detection whose best
    combined score could be beaten by a profile outside that union (threshold-algorithm bound:
    sum of weight x k-th similarity of each model) is re-scored against every compatible profile."""
    previous: dict[str, str | None] = {}
    classes: dict[str, str] = {}
    sexes: dict[str, str] = {}
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    kth: dict[str, dict[str, float | None]] = {}
    limit = top_k if top_k is not None else 1_000_000
    for version in models:
        per_model[version] = defaultdict(dict)
        kth[version] = {}
        counts: dict[str, int] = defaultdict(int)
        query, args = (_TOP_K, {}) if only is None else (_TOP_K_OF, {"only": list(only)})
        for r in conn.execute(query, {"version": version, "top_k": limit, **args}).mappings():
            det = r["detection_id"]
            previous[det], classes[det] = r["previous_deer_id"], r["classification"]
            if r["candidate_id"] is None:
                continue
            per_model[version][det][r["candidate_id"]] = float(r["similarity"])
            sexes[r["candidate_id"]] = r["candidate_sex"]
            counts[det] += 1
            kth[version][det] = min(kth[version].get(det, 1.0), float(r["similarity"]))
        for det in previous:  # fewer than k compatible profiles: the model has seen them all
            if counts.get(det, 0) < limit:
                kth[version][det] = None
    union = {det: set().union(*(per_model[v].get(det, {}) for v in models)) for det in previous}
    missing = [(det, c, v) for det, cands in union.items() for c in cands for v in models
               if c not in per_model[v].get(det, {})]
    for version in models:
        pairs = [(det, c) for det, c, v in missing if v == version]
        if pairs:
            rows = conn.execute(_PAIR_SIMILARITY, {"version": version, "dets": [p[0] for p in pairs],
                                                   "deers": [p[1] for p in pairs]}).all()
            for det, cand, sim in rows:
                per_model[version][str(det)][str(cand)] = float(sim)
    candidates: dict[str, list[_Candidate]] = {}
    unsure = []
    for det, cands in union.items():
        scored = [_Candidate(c, sexes[c], sum(w * per_model[v][det][c] for v, w in models.items()))
                  for c in cands if all(c in per_model[v].get(det, {}) for v in models)]
        scored.sort(key=lambda x: (-x.similarity, x.deer_id))
        candidates[det] = scored
        bounds = [kth[v].get(det) for v in models]
        if scored and any(b is not None for b in bounds):
            bound = sum(w * (b if b is not None else -1.0) for (v, w), b in zip(models.items(), bounds))
            if not scored[0].similarity > bound:
                unsure.append(det)
    return previous, classes, candidates, unsure


_MATCH_LOCK = 0x5EED_0A55
_PROFILE_LOCK = 0x5EED_0FF1


def assign_detections(engine: sa.Engine, models: str | dict[str, float], *, threshold: float = 0.40,
                      top_k: int = 5, method: str | None = None, run_id: str | None = None,
                      antler_tolerance: int | None = 0, detection_ids: list[str] | None = None) -> AssignReport:
    """Match every unreviewed detection against the profiles; one transaction.

    ``models`` is one embedding version, or ``{version: weight}`` whose weights sum to 1: the
    combined similarity is sum(weight x cosine) over the versions, computed exactly for the union
    of each version's pgvector top-k candidates (with a bound check that falls back to all
    profiles, so the exact combined top-1 is never missed).

    ``antler_tolerance``: the season-aware antler constraint (``core.antlers``): a candidate whose
    confident point count in the detection's hard-antler season differs by more than this from the
    detection's is skipped; None switches it off. Each time it changed the decision the run's
    ``config.antler_constraint.changed`` says which deer was skipped and why.

    ``detection_ids``: match only these (an upload's new detections, ``core.upload_path``); the
    others keep their deer and are not logged in this run."""
    if isinstance(models, str):
        models = {models: 1.0}
    if not models or any(w < 0 for w in models.values()) or abs(sum(models.values()) - 1.0) > 1e-6:
        raise ValueError(f"model weights must be non-negative and sum to 1, got {models}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    run_id = run_id or uuid.uuid4().hex
    method = method or ("single-model" if len(models) == 1 else "ensemble")
    with engine.begin() as conn:
        # one matcher at a time: a second run waits for the first and then sees its result
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MATCH_LOCK})
        previous, classes, candidates, unsure = _retrieve(conn, models, top_k, detection_ids)
        if unsure:  # rare: rescore these against every compatible profile
            _, _, full, _ = _retrieve(conn, models, None, unsure)
            for det in unsure:
                candidates[det] = full[det]
        mode = coexistence.live_mode(conn)
        protected = coexistence.protected_detections(conn) if mode.ours and not mode.reassign else set()
        antlers = None
        if antler_tolerance is not None:
            from deer_reid_assets.core.antlers.profiles import AntlerConstraint

            antlers = AntlerConstraint.load(conn, tolerance=antler_tolerance)
        log, scores, antler_changes = [], [], []
        assigned = changed = no_candidate = 0
        for det, prev in previous.items():
            ranked = candidates.get(det, [])
            if antlers is not None:
                ranked = antlers.filter(det, ranked, threshold, antler_changes)
            best = ranked[0] if ranked else None
            new = best.deer_id if best is not None and best.similarity >= threshold else None
            if det in protected:  # the worker's automatic assignment: only `cutover --reassign` changes it
                new = prev
            no_candidate += best is None
            assigned += new is not None
            changed += new != prev
            log.append({"run_id": run_id, "detection_id": det, "previous_deer_id": prev,
                        "best_deer_id": best.deer_id if best else None, "new_deer_id": new,
                        "similarity": best.similarity if best else None})
            for c in ranked[:top_k]:
                scores.append({
                    "detection_id": det, "deer_id": c.deer_id,
                    "similarity_score": stored_score(c.similarity),
                    "sex_match": sex_of(classes[det]) == c.sex, "matched": c.deer_id == new,
                    "threshold_used": Decimal(f"{threshold:.4f}"), "detection_classification": classes[det],
                    "deer_sex": c.sex,
                })
        conn.execute(sa.insert(t.reid_assignment_runs).values(
            run_id=run_id, method=method, versions={"embeddings": models}, threshold=threshold,
            config={"top_k": top_k, "rescored_against_all_profiles": len(unsure),
                    **({} if detection_ids is None else {"only_detections": len(detection_ids)}),
                    "antler_constraint": None if antlers is None else {
                        "tolerance": antler_tolerance, "changed": antler_changes}},
            n_considered=len(previous), n_assigned=assigned))
        if not mode.ours:  # the existing system owns live matching: propose, change nothing of its own
            if log:
                conn.execute(sa.insert(t.reid_assignment_log), log)
            top = {det: [{"deer_id": str(c.deer_id), "similarity": float(c.similarity)} for c in ranked[:top_k]]
                   for det, ranked in candidates.items()}
            coexistence.record_proposals(conn, run_id, log, top)
            return AssignReport(run_id=run_id, considered=len(previous), assigned=assigned, changed=changed,
                                no_candidate=no_candidate, threshold=threshold, rescored=len(unsure),
                                proposals_only=True, antler_vetoes=len(antler_changes))
        if log:
            conn.execute(sa.insert(t.reid_assignment_log), log)
            _apply(conn, [(r["detection_id"], r["new_deer_id"]) for r in log if r["new_deer_id"] != r["previous_deer_id"]])
            # rows of candidates this run did not score must not keep an older run's 'matched'
            s, lg = t.reid_similarity_scores, t.reid_assignment_log
            in_run = sa.select(lg.c.detection_id).where(lg.c.run_id == run_id)
            conn.execute(sa.update(s).where(s.c.detection_id.in_(in_run), s.c.matched.is_(True)).values(matched=False))
        if scores:
            stmt = pg_insert(t.reid_similarity_scores)
            conn.execute(stmt.on_conflict_do_update(
                constraint=t.SIMILARITY_UNIQUE,
                set_={c: stmt.excluded[c] for c in ("similarity_score", "sex_match", "matched", "threshold_used",
                                                    "detection_classification", "deer_sex", "calculated_at")}),
                scores)
        refresh_sighting_stats(conn)
    return AssignReport(run_id=run_id, considered=len(previous), assigned=assigned, changed=changed,
                        no_candidate=no_candidate, threshold=threshold, rescored=len(unsure),
                        antler_vetoes=len(antler_changes))


def stored_score(cosine: float) -> Decimal:
    """``reid_similarity_scores.similarity_score`` for a cosine similarity. The existing system stores
    the raw cosine (1 - pgvector's ``<=>``) and its CHECK keeps scores in [0, 1]; so do we: the cosine
    as it is, rounded to NUMERIC(5,4), with a negative cosine (no resemblance at all) stored as 0 and
    rounding never above 1. Thresholds (0.40) keep their meaning on this scale."""
    value = min(max(float(cosine), 0.0), 1.0) if np.isfinite(cosine) else 0.0
    return Decimal(f"{value:.4f}")


def _apply(conn: sa.Connection, changes: list[tuple[str, str | None]]) -> None:
    if not changes:
        return
    d = t.detections
    conn.execute(
        sa.update(d).where(d.c.id == sa.bindparam("det")).values(deer_id=sa.bindparam("new")),
        [{"det": det, "new": new} for det, new in changes],
    )


def rollback_assignment_run(engine: sa.Engine, run_id: str) -> int:
    """Put back every detection's deer as it was before ``run_id``; returns how many it put back.
    Detections a person has reviewed since the run keep the person's decision."""
    log, d = t.reid_assignment_log, t.detections
    with engine.begin() as conn:
        rows = conn.execute(sa.select(log.c.detection_id, log.c.previous_deer_id).where(log.c.run_id == run_id)).all()
        if not rows:
            raise ValueError(f"no assignment run {run_id!r}")
        if coexistence.proposed_only(conn, run_id):  # it changed nothing: nothing to put back
            return 0
        reviewed = set(conn.execute(
            sa.select(d.c.id).where(d.c.id.in_(sa.select(log.c.detection_id).where(log.c.run_id == run_id)),
                                    d.c.is_reviewed.is_(True)).with_for_update()
        ).scalars())
        todo = [(r[0], r[1]) for r in rows if r[0] not in reviewed]
        _apply(conn, todo)
        refresh_sighting_stats(conn)
    return len(todo)


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


def rebuild_profiles(engine: sa.Engine, *, mirror_to_deer_table: bool = True
                     ) -> tuple[dict[str, str], dict[str, ProfileReport], str | None]:
    """Profiles of every published version, mirrored onto the deer table together."""
    with engine.connect() as conn:
        versions = {f: v for f, v in published_versions(conn).items() if f in families.FAMILIES}
    if families.BASELINE not in versions:
        raise ValueError(f"no published {families.BASELINE} (baseline) embeddings: publish embeddings first")
    reports = {f: build_profiles(engine, v, f, mirror_to_deer_table=False) for f, v in versions.items()}
    set_id = mirror_profiles(engine, versions) if mirror_to_deer_table else None
    return versions, reports, set_id
