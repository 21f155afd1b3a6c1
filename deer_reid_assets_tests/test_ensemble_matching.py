"""Ensemble matching in the database: candidates come from each model's pgvector top-k, the combined
similarity is exact, and the exact combined top-1 is never missed, even when it is in neither
model's top-k (adversarial vectors)."""

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core import matching
from deer_reid_assets.core.store import schema as t

from .test_matching import DIM, add_deer, add_detection, add_version

A, B = "ms-test", "effb0-test"


def _profile(similarity: float, axis: int) -> np.ndarray:
    """A unit vector whose cosine with e0 is exactly ``similarity`` (rest on its own axis)."""
    v = np.zeros(DIM, dtype=np.float64)
    v[0] = similarity
    v[axis] = np.sqrt(1.0 - similarity**2)
    return v.astype(np.float32)


def _world(engine, sims_a: dict[str, float], sims_b: dict[str, float], classification="buck"):
    """Deer with hand-set cosine to one query in model A and model B."""
    query = np.zeros(DIM, dtype=np.float32)
    query[0] = 1.0
    ids = {}
    with engine.begin() as conn:
        add_version(conn, A, "multiscale")
        add_version(conn, B, "efficientnet")
        for n, name in enumerate(sims_a, start=1):
            ids[name] = add_deer(conn, name, "buck")
            for version, sims in ((A, sims_a), (B, sims_b)):
                conn.execute(sa.insert(t.reid_deer_profiles).values(
                    version=version, deer_id=ids[name], model_family="x", vector=_profile(sims[name], n), n_detections=1))
        det = add_detection(conn, classification, query, version=A)
        conn.execute(sa.insert(t.reid_embeddings).values(version=B, detection_id=det, embedding=query))
    return det, ids


def _scores(engine, det):
    with engine.connect() as conn:
        return {r.deer_id: float(r.similarity_score) for r in conn.execute(
            sa.select(t.reid_similarity_scores).where(t.reid_similarity_scores.c.detection_id == det))}


def test_combined_top1_outside_both_top_k_is_found(engine):
    # X is third in model A and third in model B, but best when the two are combined 50/50.
    sims_a = {"P1": 0.90, "P2": 0.85, "X": 0.60, "P3": 0.00, "P4": 0.05}
    sims_b = {"P1": 0.00, "P2": 0.05, "X": 0.60, "P3": 0.90, "P4": 0.85}
    det, ids = _world(engine, sims_a, sims_b)
    report = matching.assign_detections(engine, {A: 0.5, B: 0.5}, threshold=0.5, top_k=2)
    assert report.rescored == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.detections.c.deer_id).where(t.detections.c.id == det)).scalar() == ids["X"]
    assert _scores(engine, det)[ids["X"]] == pytest.approx(0.60, abs=1e-4)


def test_models_that_disagree_are_combined_exactly(engine):
    # Model A prefers P1, model B prefers P2; with w=0.3 on A the combined winner is P2.
    sims_a = {"P1": 0.80, "P2": 0.50}
    sims_b = {"P1": 0.20, "P2": 0.70}
    det, ids = _world(engine, sims_a, sims_b)
    report = matching.assign_detections(engine, {A: 0.3, B: 0.7}, threshold=0.4, top_k=5)
    assert report.rescored == 0 and report.assigned == 1
    scores = _scores(engine, det)
    assert scores[ids["P1"]] == pytest.approx(0.3 * 0.8 + 0.7 * 0.2, abs=1e-4)
    assert scores[ids["P2"]] == pytest.approx(0.3 * 0.5 + 0.7 * 0.7, abs=1e-4)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.detections.c.deer_id).where(t.detections.c.id == det)).scalar() == ids["P2"]
    # the same world with all weight on A picks P1
    matching.assign_detections(engine, {A: 1.0, B: 0.0}, threshold=0.4)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.detections.c.deer_id).where(t.detections.c.id == det)).scalar() == ids["P1"]


def test_ensemble_agrees_with_brute_force_on_random_vectors(engine):
    rng = np.random.default_rng(4)
    n_deer, n_det = 12, 25
    unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)  # noqa: E731
    pa, pb = unit(rng.normal(size=(n_deer, DIM))), unit(rng.normal(size=(n_deer, DIM)))
    qa, qb = unit(rng.normal(size=(n_det, DIM))), unit(rng.normal(size=(n_det, DIM)))
    with engine.begin() as conn:
        add_version(conn, A, "multiscale")
        add_version(conn, B, "efficientnet")
        deer = [add_deer(conn, f"D{i}", "buck") for i in range(n_deer)]
        for i, d in enumerate(deer):
            for version, vecs in ((A, pa), (B, pb)):
                conn.execute(sa.insert(t.reid_deer_profiles).values(
                    version=version, deer_id=d, model_family="x", vector=vecs[i], n_detections=1))
        dets = []
        for j in range(n_det):
            det = add_detection(conn, "unknown", qa[j], version=A)
            conn.execute(sa.insert(t.reid_embeddings).values(version=B, detection_id=det, embedding=qb[j]))
            dets.append(det)
    w = 0.6
    matching.assign_detections(engine, {A: w, B: 1 - w}, threshold=0.0, top_k=2)
    combined = w * qa @ pa.T + (1 - w) * qb @ pb.T
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(t.detections.c.id, t.detections.c.deer_id)).all())
    assert [got[d] for d in dets] == [deer[i] for i in combined.argmax(axis=1)]


def test_weights_must_sum_to_one(engine):
    with pytest.raises(ValueError, match="sum to 1"):
        matching.assign_detections(engine, {A: 0.6, B: 0.6})
