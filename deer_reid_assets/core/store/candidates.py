"""The matcher's candidate SQL: each unreviewed detection's nearest profiles of a compatible sex by
pgvector cosine distance (``<=>``), exact similarities of given pairs, the detections a run considers,
and transaction-local settings (``core/match_retrieval.py`` combines the models with it)."""

from __future__ import annotations

import sqlalchemy as sa

from deer_reid_assets.core.classes import sql_sex_of

SEARCHES = ("hnsw", "exact")

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


def top_k(conn: sa.Connection, version: str, limit: int, *, search: str = "exact",
          only: list[str] | None = None) -> list[sa.RowMapping]:
    """Per detection of ``version`` (unreviewed, or those in ``only``): its previous deer and
    classification with up to ``limit`` candidates, their sex and similarity, one row each (one row
    with no candidate for a detection that has none)."""
    params = {"version": version, "top_k": limit, **({"only": list(only)} if only is not None else {})}
    return conn.execute(top_k_sql(search, restricted=only is not None), params).mappings().all()


_PAIR_SIMILARITY = sa.text(
    """
    SELECT x.det AS detection_id, x.deer AS candidate_id, 1 - (p.vector <=> e.embedding) AS similarity
    FROM unnest(CAST(:dets AS uuid[]), CAST(:deers AS uuid[])) AS x(det, deer)
    JOIN reid_embeddings e ON e.detection_id = x.det AND e.version = :version
    JOIN reid_deer_profiles p ON p.deer_id = x.deer AND p.version = :version
    """
)


def pair_similarities(conn: sa.Connection, version: str, pairs: list[tuple[str, str]]) -> list[sa.Row]:
    """(detection id, deer id, similarity): the exact similarity of given (detection, profile) pairs in one model."""
    return conn.execute(_PAIR_SIMILARITY, {"version": version, "dets": [p[0] for p in pairs],
                                           "deers": [p[1] for p in pairs]}).all()


_CONSIDERED = sa.text(
    """
    SELECT DISTINCT d.id FROM detections d
    JOIN reid_embeddings e ON e.detection_id = d.id AND e.version = ANY(:versions)
    WHERE d.is_reviewed IS NOT TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
      AND (CAST(:after AS uuid) IS NULL OR d.id > CAST(:after AS uuid))
    ORDER BY d.id LIMIT :n
    """
)


def considered_after(conn: sa.Connection, versions: list[str], after: str | None, n: int) -> list[str]:
    """The next ``n`` detections (in id order, after ``after``) that a run considers: unreviewed, valid,
    not duplicates, embedded by any of ``versions``."""
    return [str(i) for i in conn.execute(_CONSIDERED, {"versions": versions, "after": after, "n": n}).scalars()]


def setting(conn: sa.Connection, name: str) -> str | None:
    """The current value of the setting ``name``; None when it is not defined."""
    return conn.execute(sa.text("SELECT current_setting(:n, true)"), {"n": name}).scalar()


def set_local(conn: sa.Connection, name: str, value: str) -> None:
    """Set ``name`` to ``value`` until the transaction ends."""
    conn.execute(sa.text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
