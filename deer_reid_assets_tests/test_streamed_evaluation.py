"""The streamed evaluation (vectors read a chunk at a time, issue 15) reports what the in-memory one
reports: on arrays with chunks smaller than the data (sampling, the different-pair stride, ties,
the sex rule, a veto, ensemble blocks), and from the database through ``protocol`` (one model,
configurations of two, the ensemble search) and the audit's would-change matcher."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core import audit
from deer_reid_assets.core.embed.versions import load_vectors
from deer_reid_assets.core.evaluation import ensemble, protocol, report, streamed
from deer_reid_assets.core.evaluation.profiles import build_profiles, match_to_profiles
from deer_reid_assets.core.evaluation.splits import identity_split
from deer_reid_assets.core.store import schema as t
from deer_reid_assets_tests.test_matching import DIM, VERSION, add_deer, add_detection, add_version

CLASSES = ["buck", "doe", "mature", "fawn", "unknown", None]
OTHER = "ms-test"


def _same(a, b, path="report") -> None:
    """Equal, numbers within a few float32 ulps (BLAS may sum a product in another order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6), path
    else:
        assert a == b, path


def assert_same_report(memory: report.EvaluationReport, chunked: report.EvaluationReport) -> None:
    _same(json.loads(memory.to_json()), json.loads(chunked.to_json()))
    assert memory.retrieval == pytest.approx(chunked.retrieval)
    assert list(memory.per_query["best_name"]) == list(chunked.per_query["best_name"])
    assert list(memory.per_query["assigned"]) == list(chunked.per_query["assigned"])
    np.testing.assert_allclose(chunked.per_query["best_similarity"], memory.per_query["best_similarity"], atol=1e-6)
    np.testing.assert_allclose(chunked.same_similarities, memory.same_similarities, atol=1e-6)
    np.testing.assert_allclose(chunked.different_similarities, memory.different_similarities, atol=1e-6)


def _world(seed: int = 4, deer: int = 14, per_deer: int = 9, dim: int = 24):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(deer, dim))
    rows, ids, labels, classes = [], [], [], []
    for d in range(deer):
        for k in range(per_deer):
            rows.append(centres[d] + 0.9 * rng.normal(size=dim))
            ids.append(f"det-{d}-{k}")
            labels.append(f"deer-{d}")
            classes.append(CLASSES[(d + k * (d % 3 == 0)) % len(CLASSES)])
    matrix = np.asarray(rows, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    split = identity_split(ids, labels, seed=1, held_out_fraction=0.2)
    assert split.gallery.size and split.test_query.size and split.held_out_identities
    g = split.gallery  # exact duplicates in the gallery: ties (gallery order decides), same deer and another deer
    same = next((i, j) for i in g for j in g if i < j and labels[i] == labels[j])
    other = next((i, j) for i in g for j in g if i < j and labels[i] != labels[j])
    matrix[same[1]] = matrix[same[0]]
    matrix[other[0]] = matrix[other[1]]
    return matrix, ids, labels, classes, split


def _veto(query_ids, names, gallery_ids, gallery_names):
    return np.array([[hashlib.sha256(f"{q}/{n}".encode()).digest()[0] < 40 for n in names] for q in query_ids],
                    dtype=bool).reshape(len(query_ids), len(names))


@pytest.mark.parametrize("query_set", ["val", "test"])
@pytest.mark.parametrize("capped", [False, True])
def test_chunked_evaluation_equals_the_in_memory_one(monkeypatch, query_set, capped):
    matrix, ids, labels, classes, split = _world()
    for module in (report, streamed):  # small caps: the retrieval sample and the different-pair stride apply
        monkeypatch.setattr(module, "MAX_RETRIEVAL_QUERIES", 11 if capped else 10_000)
        monkeypatch.setattr(module, "MAX_DIFFERENT_PAIRS", 97 if capped else 10**7)
    monkeypatch.setattr(streamed, "BLOCK", 3)  # queries scored 3 at a time against each chunk
    for chunk in (4, 7, 10_000):
        for classes_or_none, veto in ((classes, None), (None, None), (classes, _veto)):
            memory = report.evaluate(matrix, ids, labels, classes_or_none, split, query_set=query_set, veto=veto)
            chunked = streamed.evaluate_streamed(streamed.matrix_rows(matrix, chunk), ids, labels, classes_or_none,
                                                 split, query_set=query_set, veto=veto)
            assert_same_report(memory, chunked)
    if capped:
        assert memory.retrieval["sampled_from"] > memory.retrieval["n_queries"] == 11
        assert memory.different_similarities.size <= 97
    assert memory.assignment["n_assigned"] > 0


def test_chunked_ensemble_rows_with_blocks_equal_the_in_memory_ones():
    a, ids, labels, classes, split = _world(seed=5)
    b, *_ = _world(seed=6)
    rows, blocks = ensemble.ensemble_vectors(a, b, 0.3)
    memory = report.evaluate(rows, ids, labels, classes, split, blocks=blocks)
    chunked = streamed.evaluate_streamed(streamed.matrix_rows(rows, 5), ids, labels, classes, split, blocks=blocks)
    assert_same_report(memory, chunked)
    with pytest.raises(ValueError, match="block weights must sum to 1"):
        streamed.evaluate_streamed(streamed.matrix_rows(rows, 5), ids, labels, classes, split,
                                   blocks=[(0, 24, 0.5), (24, 48, 0.6)])


def test_a_bad_row_is_named_as_in_memory():
    matrix, ids, labels, classes, split = _world()
    matrix[split.gallery[-1]] = np.nan
    with pytest.raises(ValueError, match="embeddings contains non-finite values"):
        streamed.evaluate_streamed(streamed.matrix_rows(matrix, 4), ids, labels, classes, split)


@pytest.fixture
def stored_world(engine):
    """20 deer (3-6 reviewed detections each, a few with no second-model vector), 30 unreviewed."""
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(20, DIM))
    with engine.begin() as conn:
        add_version(conn)
        add_version(conn, OTHER, "multiscale")
        for d in range(20):
            deer = add_deer(conn, f"deer-{d:02d}", "buck" if d % 2 else "doe")
            for k in range(3 + d % 4):
                v = centres[d] + 1.1 * rng.normal(size=DIM)
                det = add_detection(conn, CLASSES[(d + k) % len(CLASSES)] or "unknown",
                                    (v / np.linalg.norm(v)).astype(np.float32), deer_id=deer, reviewed=True)
                if (d + k) % 9:
                    w = v + 0.7 * rng.normal(size=DIM)
                    conn.execute(sa.insert(t.reid_embeddings).values(
                        version=OTHER, detection_id=det, embedding=(w / np.linalg.norm(w)).astype(np.float32)))
        for k in range(30):
            v = centres[k % 20] + 1.1 * rng.normal(size=DIM)
            det = add_detection(conn, CLASSES[k % len(CLASSES)] or "unknown", (v / np.linalg.norm(v)).astype(np.float32))
            conn.execute(sa.insert(t.reid_embeddings).values(version=OTHER, detection_id=det,
                                                             embedding=(v / np.linalg.norm(v)).astype(np.float32)))


def _in_memory(engine, versions):
    subset, split = protocol.labelled_subset(engine, versions)
    with engine.connect() as conn:
        matrices = [load_vectors(conn, v, subset.detection_ids)[1] for v in versions]
    return subset, split, matrices


def test_stored_evaluations_read_in_chunks_equal_the_in_memory_ones(engine, stored_world):
    subset, split, (matrix,) = _in_memory(engine, [VERSION])
    assert 70 < len(subset.detection_ids) < 100 and split.gallery.size > 8
    for query_set in ("val", "test"):
        memory = report.evaluate(matrix, subset.detection_ids, subset.identities, subset.classifications, split,
                                 query_set=query_set)
        assert_same_report(memory, protocol.evaluate_version(engine, VERSION, query_set=query_set, chunk=6))

    both, split2, (a, b) = _in_memory(engine, [OTHER, VERSION])  # only detections embedded by both
    assert len(both.detection_ids) < len(subset.detection_ids)
    configurations = {"one": {VERSION: 1.0}, "two": {OTHER: 0.4, VERSION: 0.6}}
    got = protocol.evaluate_configurations(engine, configurations)
    rows = np.concatenate([np.sqrt(0.4) * a.astype(np.float64), np.sqrt(0.6) * b.astype(np.float64)], axis=1)
    expected = {
        "one": report.evaluate(b, both.detection_ids, both.identities, both.classifications, split2),
        "two": report.evaluate(rows, both.detection_ids, both.identities, both.classifications, split2,
                               blocks=[(0, DIM, 0.4), (DIM, 2 * DIM, 0.6)]),
    }
    for name in configurations:
        assert_same_report(expected[name], got[name])

    weights = [0.0, 0.35, 0.6, 1.0]
    memory_choice = ensemble.search_weights(a, b, both.detection_ids, both.identities, both.classifications, split2,
                                            weights=weights)
    chunked_choice = protocol.tune_ensemble(engine, OTHER, VERSION, chunk=5, weights=weights)
    assert chunked_choice.curve.shape[0] == len(weights)
    _same(memory_choice.to_json(), chunked_choice.to_json())


def test_the_audits_would_change_matcher_reads_in_chunks(engine, stored_world):
    with engine.connect() as conn:
        one_chunk = audit._assign_streamed(conn, VERSION, 0.3, chunk=10_000)
        chunked = audit._assign_streamed(conn, VERSION, 0.3, chunk=4)
        rows = conn.execute(sa.text(
            "SELECT d.id::text, d.deer_id::text, d.is_reviewed, d.classification, dr.sex::text FROM detections d "
            "LEFT JOIN deer dr ON dr.id = d.deer_id ORDER BY d.id")).all()
        found, matrix = load_vectors(conn, VERSION, [r[0] for r in rows])
    labelled = [i for i, r in enumerate(rows) if found[i] and r[2]]
    queries = [i for i, r in enumerate(rows) if found[i] and not r[2]]
    profiles = build_profiles(matrix[labelled], [rows[i][1] for i in labelled], [rows[i][4] for i in labelled])
    matches = match_to_profiles(matrix[queries], profiles, [rows[i][3] for i in queries])
    expected = {rows[i][0]: (n if not math.isnan(s) and s >= 0.3 else None)
                for i, n, s in zip(queries, matches.best_name, matches.best_similarity)}
    assert chunked == one_chunk == expected
    assert 0 < sum(v is not None for v in expected.values()) < len(expected) == 30


def test_split_keys_are_made_unique_in_sql_as_unique_keys_does(engine, stored_world):
    with engine.begin() as conn:  # two more boxes identical to a labelled one, in the same photo
        det = conn.execute(sa.select(t.detections).where(t.detections.c.is_reviewed.is_(True)).limit(1)).mappings().one()
        for _ in range(2):
            conn.execute(sa.insert(t.detections).values(
                image_id=det["image_id"], bbox=det["bbox"], confidence=0.8, classification=det["classification"],
                deer_id=det["deer_id"], is_reviewed=True, is_valid=True))
    with engine.connect() as conn:
        labelled = protocol.labelled_set(conn)
        raw = conn.execute(sa.text(
            f"SELECT {protocol.SPLIT_KEY_SQL} FROM detections d LEFT JOIN reid_image_files f ON f.image_id = d.image_id "
            "WHERE d.is_reviewed ORDER BY d.id")).scalars().all()
    assert labelled.split_keys == protocol.unique_keys(raw)
    assert sum("#" in key for key in labelled.split_keys) == 2 and len(set(labelled.split_keys)) == len(raw)
