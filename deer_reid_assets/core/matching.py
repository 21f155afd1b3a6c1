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

The SQL is in ``store/profiles.py`` (profiles, the deer-table mirror) and ``store/matches.py`` (runs,
their log, scores, deer ids); the candidates' in ``store/candidates.py``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.core import coexistence, families
from deer_reid_assets.core.classes import sex_of
from deer_reid_assets.core.embed.versions import published_versions
from deer_reid_assets.core.match_retrieval import CHUNK_SIZE, SEARCHES, considered_chunks, retrieve
from deer_reid_assets.core.store import matches, profiles
from deer_reid_assets.core.store.matches import refresh_sighting_stats
from deer_reid_assets.core.store.profiles import labelled_detection_ids  # noqa: F401  (a public name of this module)

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


def build_profiles(engine: sa.Engine, version: str, family: str, *, mirror_to_deer_table: bool = True) -> ProfileReport:
    """(Re)build the profiles of ``version`` in one transaction (and mirror them onto the deer table):
    each deer's is the L2-normalised mean of its labelled detections' embeddings, computed in the
    database (``store.profiles``); a zero mean gets no profile."""
    with engine.begin() as conn:
        profiles.one_writer(conn)
        n_labelled, n_labelled_deer = profiles.labelled_counts(conn)
        embedded_deer = profiles.embedded_labelled_deer(conn, version)
        built = profiles.replace_profiles(conn, version, family)
        saved = _mirror(conn, {family: version}) if mirror_to_deer_table else 0
    return ProfileReport(version=version, profiles=built, labelled_detections=n_labelled,
                         deer_without_embeddings=n_labelled_deer - embedded_deer, legacy_vectors_saved=saved)


def legacy_version(family: str) -> str:
    """Profile version holding the vectors a deer-table column had before this pipeline wrote to it."""
    return f"{LEGACY_PROFILE_VERSION}-{families.get(family).code}"


def mirror_profiles(engine: sa.Engine, versions: dict[str, str]) -> str:
    """Write the profiles of ``{family: version}`` onto the deer table's columns in one transaction;
    returns what ``deer.embedding_version`` now says (see ``_mirror``)."""
    with engine.begin() as conn:
        profiles.one_writer(conn)  # two rebuilds at once take turns (each replaces the profiles as a whole)
        _mirror(conn, versions)
        return profile_set_id(versions)


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
    profiles.add_profile_set(conn, set_id, columns)
    if not coexistence.live_mode(conn).ours:  # its worker reads these columns: not before cut-over
        return saved
    for family, version in versions.items():  # one statement per column: no vector passes through Python
        profiles.mirror_column(conn, families.get(family).deer_column, version, set_id)
    return saved


def _save_legacy_vectors(conn: sa.Connection, family: str) -> int:
    """Before this pipeline first writes a deer-table column, keep the vectors it holds."""
    column = families.get(family).deer_column
    if profiles.column_written_before(conn, column):
        return 0
    legacy = profiles.deer_column_vectors(conn, column)
    if not legacy:
        return 0
    return profiles.add_profiles(conn, legacy_version(family), family, legacy)


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
        matches.one_matcher(conn)
        mode = coexistence.live_mode(conn)
        protected = coexistence.protected_detections(conn) if mode.ours and not mode.reassign else set()
        antlers = None
        if antler_tolerance is not None:
            from deer_reid_assets.core.antlers.profiles import AntlerConstraint

            antlers = AntlerConstraint.load(conn, tolerance=antler_tolerance)
        matches.start_run(conn, run_id, method, models, threshold)  # counts are set once every chunk is written
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
        matches.finish_run(conn, run_id, {
            "top_k": top_k, "search": search, "rescored_against_all_profiles": run.rescored,
            **({} if detection_ids is None else {"only_detections": len(detection_ids)}),
            "antler_constraint": None if antlers is None else {
                "tolerance": antler_tolerance, "changed": run.antler_changes}},
            run.considered, run.assigned)
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
        matches.log_decisions(conn, log)
        if not self.ours:  # the existing system owns live matching: propose, change nothing of its own
            top = {det: [{"deer_id": str(c.deer_id), "similarity": float(c.similarity)} for c in ranked[:self.top_k]]
                   for det, ranked in candidates.items()}
            coexistence.record_proposals(conn, self.run_id, log, top)
            return
        _apply(conn, [(r["detection_id"], r["new_deer_id"]) for r in log if r["new_deer_id"] != r["previous_deer_id"]])
        # rows of candidates this run did not score must not keep an older run's 'matched'
        matches.clear_matched(conn, [r["detection_id"] for r in log])
        matches.upsert_scores(conn, scores)


def stored_score(cosine: float) -> Decimal:
    """``reid_similarity_scores.similarity_score`` for a cosine similarity. The existing system stores
    the raw cosine (1 - pgvector's ``<=>``) and its CHECK keeps scores in [0, 1]; so do we: the cosine
    as it is, rounded to NUMERIC(5,4), with a negative cosine (no resemblance at all) stored as 0 and
    rounding never above 1. Thresholds (0.40) keep their meaning on this scale."""
    value = min(max(float(cosine), 0.0), 1.0) if np.isfinite(cosine) else 0.0
    return Decimal(f"{value:.4f}")


def _apply(conn: sa.Connection, changes: list[tuple[str, str | None]]) -> None:
    """Set each detection's deer (``store.matches.set_deer``: one statement for the whole list)."""
    matches.set_deer(conn, changes)


def rollback_assignment_run(engine: sa.Engine, run_id: str) -> int:
    """Put back every detection's deer as it was before ``run_id``; returns how many it put back.
    Detections a person has reviewed since the run keep the person's decision."""
    with engine.begin() as conn:
        rows = matches.run_log(conn, run_id)
        if not rows:
            raise ValueError(f"no assignment run {run_id!r}")
        if coexistence.proposed_only(conn, run_id):  # it changed nothing: nothing to put back
            return 0
        reviewed = matches.reviewed_since(conn, run_id)
        todo = [(r[0], r[1]) for r in rows if r[0] not in reviewed]
        _apply(conn, todo)
        refresh_sighting_stats(conn)
    return len(todo)


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
