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
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from deer_reid_assets.core import coexistence, families
from deer_reid_assets.core.classes import sex_of
from deer_reid_assets.core.embed.versions import published_versions
from deer_reid_assets.core.match_retrieval import CHUNK_SIZE, SEARCHES, considered_chunks, retrieve
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


_LABELLED = """
    FROM detections d JOIN reid_embeddings e ON e.detection_id = d.id AND e.version = :version
    WHERE d.deer_id IS NOT NULL AND d.is_reviewed IS TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
"""
_INSERT_PROFILES = sa.text(f"""
    INSERT INTO reid_deer_profiles (version, deer_id, model_family, vector, n_detections)
    SELECT :version, d.deer_id, :family, l2_normalize(avg(e.embedding)), count(*)
    {_LABELLED}
    GROUP BY d.deer_id
    HAVING vector_norm(avg(e.embedding)) > 0
""")
"""Each deer's profile: the L2-normalised mean of its labelled detections' embeddings, computed by
pgvector in the database (``avg`` accumulates in double precision): nothing is loaded into Python,
so a rebuild's memory does not grow with the number of detections. A zero mean gets no profile."""


def build_profiles(engine: sa.Engine, version: str, family: str, *, mirror_to_deer_table: bool = True) -> ProfileReport:
    """(Re)build the profiles of ``version`` in one transaction (and mirror them onto the deer table)."""
    with engine.begin() as conn:
        _one_profile_writer(conn)
        d = t.detections
        labelled = sa.and_(d.c.deer_id.isnot(None), d.c.is_reviewed.is_(True), d.c.is_valid.isnot(False),
                           d.c.is_duplicate.isnot(True))
        n_labelled, n_labelled_deer = conn.execute(
            sa.select(sa.func.count(), sa.func.count(d.c.deer_id.distinct())).where(labelled)).one()
        embedded_deer = conn.execute(sa.text(f"SELECT count(DISTINCT d.deer_id) {_LABELLED}"),
                                     {"version": version}).scalar_one()
        p = t.reid_deer_profiles
        conn.execute(sa.delete(p).where(p.c.version == version))
        profiles = conn.execute(_INSERT_PROFILES, {"version": version, "family": family}).rowcount
        saved = _mirror(conn, {family: version}) if mirror_to_deer_table else 0
    return ProfileReport(version=version, profiles=profiles, labelled_detections=n_labelled,
                         deer_without_embeddings=n_labelled_deer - embedded_deer, legacy_vectors_saved=saved)


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
    if not coexistence.live_mode(conn).ours:  # its worker reads these columns: not before cut-over
        return saved
    for family, version in versions.items():  # one statement per column: no vector passes through Python
        column = families.get(family).deer_column
        # rows already holding this vector and set are left alone: every rewritten row costs an
        # insert into the column's HNSW index, and a rebuild after a few new labels changes few deer
        conn.execute(sa.text(
            f"UPDATE deer SET {column} = p.vector, embedding_version = :set_id, updated_at = now() "
            "FROM reid_deer_profiles p WHERE p.version = :version AND p.deer_id = deer.id "
            f"AND (deer.{column} IS DISTINCT FROM p.vector OR deer.embedding_version IS DISTINCT FROM :set_id)"),
            {"set_id": set_id, "version": version})
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


_MATCH_LOCK = 0x5EED_0A55
_PROFILE_LOCK = 0x5EED_0FF1


def assign_detections(engine: sa.Engine, models: str | dict[str, float], *, threshold: float = 0.40,
                      top_k: int = 5, method: str | None = None, run_id: str | None = None,
                      antler_tolerance: int | None = 0, search: str = "exact",
                      chunk_size: int = CHUNK_SIZE, detection_ids: list[str] | None = None) -> AssignReport:
    """Match every unreviewed detection against the profiles; one transaction, read, decided and
    written ``chunk_size`` detections at a time (memory does not grow with the number of detections).

    ``models`` is one embedding version, or ``{version: weight}`` whose weights sum to 1: the
    combined similarity is sum(weight x cosine) over the versions, computed exactly for the union
    of each version's pgvector top-k candidates (with a bound check that falls back to all
    profiles, so the exact combined top-1 is never missed).

    ``search``: ``"exact"`` (the default) scores every compatible profile; ``"hnsw"`` retrieves each
    model's top-k through the HNSW index (approximate; see ``core/match_retrieval.py``). Measured
    with ``benchmarks/bench_scale.py`` (README, "Speed"): at up to 2,000 profiles the exact scan
    was as fast or faster, so it stays the default.

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
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    run_id = run_id or uuid.uuid4().hex
    method = method or ("single-model" if len(models) == 1 else "ensemble")
    with engine.begin() as conn:
        # one matcher at a time: a second run waits for the first and then sees its result
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MATCH_LOCK})
        mode = coexistence.live_mode(conn)
        protected = coexistence.protected_detections(conn) if mode.ours and not mode.reassign else set()
        antlers = None
        if antler_tolerance is not None:
            from deer_reid_assets.core.antlers.profiles import AntlerConstraint

            antlers = AntlerConstraint.load(conn, tolerance=antler_tolerance)
        conn.execute(sa.insert(t.reid_assignment_runs).values(  # counts are set once every chunk is written
            run_id=run_id, method=method, versions={"embeddings": models}, threshold=threshold, config={},
            n_considered=0, n_assigned=0))
        run = _Run(run_id, threshold, top_k, mode.ours, protected, antlers)
        chunks = (considered_chunks(conn, list(models), chunk_size) if detection_ids is None else
                  (list(detection_ids[i : i + chunk_size]) for i in range(0, len(detection_ids), chunk_size)))
        for chunk in chunks:
            previous, classes, candidates, unsure = retrieve(conn, models, top_k, search=search, only=chunk)
            if unsure:  # rare: rescore these (only these) against every compatible profile
                _, _, full, _ = retrieve(conn, models, None, search="exact", only=unsure)
                for det in unsure:
                    candidates[det] = full[det]
            run.rescored += len(unsure)
            run.decide_and_write(conn, previous, classes, candidates)
        conn.execute(sa.update(t.reid_assignment_runs).where(t.reid_assignment_runs.c.run_id == run_id).values(
            config={"top_k": top_k, "search": search, "rescored_against_all_profiles": run.rescored,
                    **({} if detection_ids is None else {"only_detections": len(detection_ids)}),
                    "antler_constraint": None if antlers is None else {
                        "tolerance": antler_tolerance, "changed": run.antler_changes}},
            n_considered=run.considered, n_assigned=run.assigned))
        if mode.ours:
            refresh_sighting_stats(conn)
    return AssignReport(run_id=run_id, considered=run.considered, assigned=run.assigned, changed=run.changed,
                        no_candidate=run.no_candidate, threshold=threshold, rescored=run.rescored,
                        proposals_only=not mode.ours, antler_vetoes=len(run.antler_changes))


@dataclass
class _Run:
    """One matching run's decisions, made and written a chunk of detections at a time."""

    run_id: str
    threshold: float
    top_k: int
    ours: bool  # live matching is this pipeline's: write deer ids and scores (else proposals only)
    protected: set
    antlers: object | None
    considered: int = 0
    assigned: int = 0
    changed: int = 0
    no_candidate: int = 0
    rescored: int = 0
    antler_changes: list = field(default_factory=list)

    def decide_and_write(self, conn: sa.Connection, previous: dict, classes: dict, candidates: dict) -> None:
        log, scores = [], []
        for det, prev in previous.items():
            ranked = candidates.get(det, [])
            if self.antlers is not None:
                ranked = self.antlers.filter(det, ranked, self.threshold, self.antler_changes)
            best = ranked[0] if ranked else None
            new = best.deer_id if best is not None and best.similarity >= self.threshold else None
            if det in self.protected:  # the worker's automatic assignment: only `cutover --reassign` changes it
                new = prev
            self.considered += 1
            self.no_candidate += best is None
            self.assigned += new is not None
            self.changed += new != prev
            log.append({"run_id": self.run_id, "detection_id": det, "previous_deer_id": prev,
                        "best_deer_id": best.deer_id if best else None, "new_deer_id": new,
                        "similarity": best.similarity if best else None})
            for c in ranked[:self.top_k]:
                scores.append({
                    "detection_id": det, "deer_id": c.deer_id,
                    "similarity_score": stored_score(c.similarity),
                    "sex_match": sex_of(classes[det]) == c.sex, "matched": c.deer_id == new,
                    "threshold_used": Decimal(f"{self.threshold:.4f}"), "detection_classification": classes[det],
                    "deer_sex": c.sex,
                })
        if not log:
            return
        conn.execute(sa.insert(t.reid_assignment_log), log)
        if not self.ours:  # the existing system owns live matching: propose, change nothing of its own
            top = {det: [{"deer_id": str(c.deer_id), "similarity": float(c.similarity)} for c in ranked[:self.top_k]]
                   for det, ranked in candidates.items()}
            coexistence.record_proposals(conn, self.run_id, log, top)
            return
        _apply(conn, [(r["detection_id"], r["new_deer_id"]) for r in log if r["new_deer_id"] != r["previous_deer_id"]])
        # rows of candidates this run did not score must not keep an older run's 'matched'
        s = t.reid_similarity_scores
        conn.execute(sa.update(s).where(s.c.detection_id.in_([r["detection_id"] for r in log]), s.c.matched.is_(True))
                     .values(matched=False))
        _upsert_scores(conn, scores)


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


def _upsert_scores(conn: sa.Connection, scores: list[dict]) -> None:
    """reid_similarity_scores rows in one statement, one array per column (client-side ids, as the
    existing system's tables have no defaults): neither a round trip nor a compiled VALUES row each."""
    if scores:
        conn.execute(_UPSERT_SCORES, {"id": [str(uuid.uuid4()) for _ in scores],
                                      **{c: [row[c] for row in scores] for c in _SCORE_COLUMNS}})


def stored_score(cosine: float) -> Decimal:
    """``reid_similarity_scores.similarity_score`` for a cosine similarity. The existing system stores
    the raw cosine (1 - pgvector's ``<=>``) and its CHECK keeps scores in [0, 1]; so do we: the cosine
    as it is, rounded to NUMERIC(5,4), with a negative cosine (no resemblance at all) stored as 0 and
    rounding never above 1. Thresholds (0.40) keep their meaning on this scale."""
    value = min(max(float(cosine), 0.0), 1.0) if np.isfinite(cosine) else 0.0
    return Decimal(f"{value:.4f}")


def _apply(conn: sa.Connection, changes: list[tuple[str, str | None]]) -> None:
    """Set each detection's deer: one statement for the whole list (not a round trip per row)."""
    if not changes:
        return
    conn.execute(sa.text(
        "UPDATE detections SET deer_id = x.new FROM unnest(CAST(:dets AS uuid[]), CAST(:news AS uuid[])) "
        "AS x(det, new) WHERE detections.id = x.det"),
        {"dets": [str(det) for det, _ in changes], "news": [None if new is None else str(new) for _, new in changes]})


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
