"""Candidate retrieval for the matcher (``core/matching.py``): each unreviewed detection's nearest
profiles of a compatible sex, by pgvector cosine distance (``<=>``), in one SQL statement per model.

Two ways to search, same result shape:

* ``"hnsw"``: the HNSW index on ``reid_deer_profiles.vector`` (migration 027) with pgvector's
  iterative scan (``hnsw.iterative_scan = strict_order``), so the version and sex filters never
  leave a detection with fewer than k candidates while compatible profiles remain; approximate,
  with ``hnsw.ef_search`` = :data:`EF_SEARCH` (recall@1 against the exact scan is measured by
  ``benchmarks/bench_scale.py``).
* ``"exact"`` (the matcher's default): every compatible profile is scored (ties broken by deer id).

The SQL is in ``store/candidates.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import sqlalchemy as sa

from deer_reid_assets.core.store import candidates as store
from deer_reid_assets.core.store.candidates import SEARCHES, top_k_sql  # noqa: F401  (public names of this module)

CHUNK_SIZE = 2000
"""Detections read, decided and written together by the matcher: its memory is bounded by this."""
EF_SEARCH = 100
"""Candidates the HNSW search keeps per detection (pgvector's default is 40): recall over speed."""


def considered_chunks(conn: sa.Connection, versions: list[str], size: int = CHUNK_SIZE) -> Iterator[list[str]]:
    """The detections a run considers (unreviewed, valid, not duplicates, embedded by any of
    ``versions``), ``size`` at a time in id order: keyset pagination, never the whole list at once."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    after = None
    while True:
        ids = store.considered_after(conn, versions, after, size)
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
    before = {name: store.setting(conn, name) for name in _HNSW_SETTINGS}
    for name, value in _HNSW_SETTINGS.items():
        store.set_local(conn, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is not None:
                store.set_local(conn, name, value)


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
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    for version in models:
        per_model[version] = defaultdict(dict)
        kth[version] = {}
        counts: dict[str, int] = defaultdict(int)
        with hnsw_settings(conn) if search == "hnsw" else nullcontext():
            rows = store.top_k(conn, version, limit, search=search, only=only)
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
            for det, cand, sim in store.pair_similarities(conn, version, pairs):
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
