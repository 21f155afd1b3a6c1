"""Candidate retrieval for the matcher (``core/matching.py``): each unreviewed detection's nearest
profiles of a compatible sex, by pgvector cosine distance (``<=>``), in one SQL statement per model.

Two ways to search, same result shape:

* ``"hnsw"``: the HNSW index on ``reid_deer_profiles.vector`` (migration 027) with pgvector's
  iterative scan (``hnsw.iterative_scan = strict_order``), so the version and sex filters never
  leave a detection with fewer than k candidates while compatible profiles remain; approximate,
  with ``hnsw.ef_search`` = :data:`EF_SEARCH` (recall@1 against the exact scan is measured by
  ``benchmarks/bench_scale.py``).
* ``"exact"`` (the matcher's default): every compatible profile is scored (ties broken by deer id).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import sqlalchemy as sa

from deer_reid_assets.core.classes import sql_sex_of

SEARCHES = ("hnsw", "exact")
CHUNK_SIZE = 2000
"""Detections read, decided and written together by the matcher: its memory is bounded by this."""
EF_SEARCH = 100
"""Candidates the HNSW search keeps per detection (pgvector's default is 40): recall over speed."""

_TOP_K = """
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
        ORDER BY {order}
        LIMIT :top_k
    ) c ON TRUE
    """.replace("{sex}", sql_sex_of("COALESCE(d.corrected_classification, d.classification)"))
# The exact scan's tie-break on deer_id also keeps the planner off the index (it orders by two keys).
_ORDER = {"hnsw": "p.vector <=> q.embedding", "exact": "p.vector <=> q.embedding, p.deer_id"}
_ONLY = "AND d.id = ANY(CAST(:only AS uuid[]))"


def top_k_sql(search: str, *, restricted: bool = False) -> sa.TextClause:
    """Top-k profiles of a compatible sex for every unreviewed detection (or those in ``:only``)."""
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    return sa.text(_TOP_K.replace("{order}", _ORDER[search]).replace("{only}", _ONLY if restricted else ""))


_PAIR_SIMILARITY = sa.text(
    """
    SELECT x.det AS detection_id, x.deer AS candidate_id, 1 - (p.vector <=> e.embedding) AS similarity
    FROM unnest(CAST(:dets AS uuid[]), CAST(:deers AS uuid[])) AS x(det, deer)
    JOIN reid_embeddings e ON e.detection_id = x.det AND e.version = :version
    JOIN reid_deer_profiles p ON p.deer_id = x.deer AND p.version = :version
    """
)
"""Exact similarity of given (detection, profile) pairs in one model."""


_CONSIDERED = sa.text(
    """
    SELECT DISTINCT d.id FROM detections d
    JOIN reid_embeddings e ON e.detection_id = d.id AND e.version = ANY(:versions)
    WHERE d.is_reviewed IS NOT TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
      AND (CAST(:after AS uuid) IS NULL OR d.id > CAST(:after AS uuid))
    ORDER BY d.id LIMIT :n
    """
)


def considered_chunks(conn: sa.Connection, versions: list[str], size: int = CHUNK_SIZE) -> Iterator[list[str]]:
    """The detections a run considers (unreviewed, valid, not duplicates, embedded by any of
    ``versions``), ``size`` at a time in id order: keyset pagination, never the whole list at once."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    after = None
    while True:
        ids = [str(i) for i in conn.execute(_CONSIDERED, {"versions": versions, "after": after, "n": size}).scalars()]
        if not ids:
            return
        yield ids
        after = ids[-1]


@dataclass
class Candidate:
    deer_id: str
    sex: str
    similarity: float  # combined over the models


_HNSW_SETTINGS = {"hnsw.iterative_scan": "strict_order", "hnsw.ef_search": str(EF_SEARCH), "enable_sort": "off"}
"""Filtered HNSW scans continue until k rows pass, in distance order; and the planner is told not to
sort every profile instead (left to itself it prefers the sort below a few thousand profiles)."""


@contextmanager
def hnsw_settings(conn: sa.Connection) -> Iterator[None]:
    """The settings above for the statements inside, then the transaction's previous values again."""
    before = {name: conn.execute(sa.text("SELECT current_setting(:n, true)"), {"n": name}).scalar()
              for name in _HNSW_SETTINGS}
    for name, value in _HNSW_SETTINGS.items():
        conn.execute(sa.text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is not None:
                conn.execute(sa.text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


def retrieve(conn: sa.Connection, models: dict[str, float], top_k: int | None, *, search: str = "exact",
             only: list[str] | None = None):
    """Per detection: previous deer, classification, and candidates with their exact combined
    similarity. Candidates are the union of each model's top-k; a detection whose best combined
    score could be beaten by a profile outside that union (threshold-algorithm bound: sum of
    weight x k-th similarity of each model) is returned in ``unsure``, to be re-scored against
    every compatible profile (``top_k=None``, ``search="exact"``, ``only=unsure``)."""
    previous: dict[str, str | None] = {}
    classes: dict[str, str] = {}
    sexes: dict[str, str] = {}
    per_model: dict[str, dict[str, dict[str, float]]] = {}
    kth: dict[str, dict[str, float | None]] = {}
    limit = top_k if top_k is not None else 1_000_000
    statement = top_k_sql(search, restricted=only is not None)
    for version in models:
        per_model[version] = defaultdict(dict)
        kth[version] = {}
        counts: dict[str, int] = defaultdict(int)
        params = {"version": version, "top_k": limit, **({"only": list(only)} if only is not None else {})}
        with hnsw_settings(conn) if search == "hnsw" else nullcontext():
            rows = conn.execute(statement, params).mappings().all()
        for r in rows:
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
    candidates: dict[str, list[Candidate]] = {}
    unsure = []
    for det, cands in union.items():
        scored = [Candidate(c, sexes[c], sum(w * per_model[v][det][c] for v, w in models.items()))
                  for c in cands if all(c in per_model[v].get(det, {}) for v in models)]
        scored.sort(key=lambda x: (-x.similarity, x.deer_id))
        candidates[det] = scored
        bounds = [kth[v].get(det) for v in models]
        if scored and any(b is not None for b in bounds):
            bound = sum(w * (b if b is not None else -1.0) for (v, w), b in zip(models.items(), bounds))
            if not scored[0].similarity > bound:
                unsure.append(det)
    return previous, classes, candidates, unsure
