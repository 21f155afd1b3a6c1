"""Read-only summaries the assets and the CLI show, and the ensemble-search cache: SQL that used to
sit in ``defs/`` and ``cli.py``."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from deer_reid_assets.core.store import schema as t


def detections_by_classification(conn: sa.Connection) -> pd.DataFrame:
    """Valid detections per classification: how many, how many labelled, how many with a deer."""
    rows = conn.execute(sa.text(
        """SELECT COALESCE(classification, 'unknown') AS classification, count(*) AS detections,
                  count(*) FILTER (WHERE is_reviewed AND deer_id IS NOT NULL) AS labelled,
                  count(*) FILTER (WHERE deer_id IS NOT NULL) AS with_deer
           FROM detections WHERE is_valid IS NOT FALSE GROUP BY 1 ORDER BY 1""")).all()
    return pd.DataFrame(rows, columns=["classification", "detections", "labelled", "with_deer"])


def crop_totals(conn: sa.Connection) -> dict[str, int]:
    """{crop status: count} over every crop ever cut."""
    return {status: int(n) for status, n in conn.execute(
        sa.text("SELECT status, count(*) FROM reid_crops GROUP BY status")).all()}


def profile_sizes(conn: sa.Connection, version: str) -> pd.DataFrame:
    """The profiles of ``version``, largest first: deer name, sex and labelled detections behind it."""
    rows = conn.execute(sa.text(
        """SELECT dr.name, dr.sex::text AS sex, p.n_detections FROM reid_deer_profiles p
           JOIN deer dr ON dr.id = p.deer_id WHERE p.version = :v ORDER BY p.n_detections DESC, dr.name"""),
        {"v": version}).all()
    return pd.DataFrame(rows, columns=["deer", "sex", "labelled_detections"])


def top_assignments(conn: sa.Connection, run_id: str, limit: int = 15) -> pd.DataFrame:
    """The most similar assignments an assignment run logged."""
    rows = conn.execute(sa.text(
        """SELECT l.detection_id::text AS detection, dr.name AS deer, round(l.similarity::numeric, 3) AS similarity
           FROM reid_assignment_log l LEFT JOIN deer dr ON dr.id = l.new_deer_id
           WHERE l.run_id = :r ORDER BY l.similarity DESC NULLS LAST LIMIT :n"""), {"r": run_id, "n": limit}).all()
    return pd.DataFrame(rows, columns=["detection", "deer", "similarity"])


def find_ensemble_search(conn: sa.Connection, version_a: str, version_b: str, *, max_false_match_rate: float,
                         labelled_fingerprint: str, split_seed: int) -> sa.Row | None:
    """The newest ensemble search over the same versions, budget, labels and split; None if none."""
    w = t.reid_ensemble_weights
    return conn.execute(sa.select(w).where(
        w.c.version_a == version_a, w.c.version_b == version_b,
        w.c.max_false_match_rate == max_false_match_rate,
        w.c.search["labelled_fingerprint"].astext == labelled_fingerprint,
        w.c.search["split_seed"].astext == str(split_seed),
    ).order_by(w.c.id.desc()).limit(1)).first()


def newest_ensemble_search(conn: sa.Connection, version_a: str, version_b: str) -> sa.Row | None:
    """The newest ensemble search over these two versions, whatever its budget, labels or split; None if none."""
    w = t.reid_ensemble_weights
    return conn.execute(sa.select(w).where(w.c.version_a == version_a, w.c.version_b == version_b)
                        .order_by(w.c.created_at.desc(), w.c.id.desc()).limit(1)).first()


def save_ensemble_search(conn: sa.Connection, *, version_a: str, version_b: str, weight: float,
                         threshold: float | None, meets_budget: bool, max_false_match_rate: float, search: dict) -> int:
    """Store an ensemble search; returns its id."""
    return conn.execute(sa.insert(t.reid_ensemble_weights).values(
        version_a=version_a, version_b=version_b, weight=weight, threshold=threshold, meets_budget=meets_budget,
        max_false_match_rate=max_false_match_rate, search=search).returning(t.reid_ensemble_weights.c.id)).scalar_one()


def weights_of(conn: sa.Connection, versions: list[str]) -> str:
    """One line naming the weights behind each embedding version ('<version>: <weights description>')."""
    rows = conn.execute(sa.text(
        "SELECT version, weights_description FROM reid_embedding_versions WHERE version = ANY(:v) ORDER BY version"),
        {"v": [v for v in versions if v]}).all()
    return "; ".join(f"{v}: {d}" for v, d in rows) or "unknown (no embedding version recorded)"


def run_proposals(conn: sa.Connection, run_id: str) -> list[tuple[str | None, float | None]]:
    """(best deer, its similarity) of every detection an assignment run considered."""
    return [(str(d) if d else None, float(s) if s is not None else None) for d, s in conn.execute(sa.text(
        "SELECT best_deer_id, similarity FROM reid_assignment_log WHERE run_id = :r"), {"r": run_id}).all()]
