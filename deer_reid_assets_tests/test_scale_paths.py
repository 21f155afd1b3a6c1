"""The paths rewritten to scale with the number of detections (issue 15, the cost curve) give the
results the straightforward versions gave: chunked matching equals one chunk, HNSW finds the exact
scan's best profile on a small world, profiles averaged in SQL equal numpy's means, vectors loaded
in binary chunks equal the stored ones, and the evaluation's blocked, vectorised steps equal the
per-pair rule."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from deer_reid_assets.core import matching
from deer_reid_assets.core.embed.versions import load_embeddings, load_vectors
from deer_reid_assets.core.evaluation import profiles as eval_profiles
from deer_reid_assets.core.evaluation import scores
from deer_reid_assets.core.evaluation.sex import sex_compatible
from deer_reid_assets.core.store import schema as t
from deer_reid_assets_tests.test_matching import DIM, FAMILY, VERSION, add_deer, add_detection, add_version, profiles

CLASSES = ["buck", "doe", "unknown", "fawn", "mature", "young", None]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def random_world(engine):
    """12 deer with 3 labelled detections each, 40 unlabelled ones near a random deer."""
    rng = np.random.default_rng(3)
    centres = _unit(rng.normal(size=(12, DIM)))
    world = {"deer": [], "labelled": {}, "unlabelled": [], "no_embedding": None}
    with engine.begin() as conn:
        add_version(conn)
        for i in range(12):
            sex = "buck" if i % 2 == 0 else "doe"
            deer = add_deer(conn, f"deer-{i}", sex)
            world["deer"].append(deer)
            world["labelled"][deer] = [_unit(centres[i] + 0.6 * rng.normal(size=DIM) / np.sqrt(DIM)) for _ in range(3)]
            for v in world["labelled"][deer]:
                add_detection(conn, sex, v, deer_id=deer, reviewed=True)
        for k in range(40):
            v = _unit(centres[rng.integers(12)] + 0.8 * rng.normal(size=DIM) / np.sqrt(DIM))
            world["unlabelled"].append(add_detection(conn, CLASSES[k % len(CLASSES)] or "unknown", v))
        world["no_embedding"] = add_detection(conn, "buck", None)
    return world


def _run(engine, run_id: str) -> tuple[dict, dict]:
    with engine.connect() as conn:
        log = {r.detection_id: (r.best_deer_id, r.new_deer_id, round(r.similarity, 6))
               for r in conn.execute(sa.select(t.reid_assignment_log).where(t.reid_assignment_log.c.run_id == run_id))}
        s = t.reid_similarity_scores
        stored = {(r.detection_id, r.deer_id): (r.similarity_score, r.matched) for r in conn.execute(sa.select(s))}
    return log, stored


def test_profiles_are_the_normalised_means_computed_in_the_database(engine, random_world):
    report = matching.build_profiles(engine, VERSION, FAMILY)
    assert (report.profiles, report.labelled_detections, report.deer_without_embeddings) == (12, 36, 0)
    got = profiles(engine)
    for deer, vectors in random_world["labelled"].items():
        mean = np.mean(vectors, axis=0)
        np.testing.assert_allclose(got[deer], mean / np.linalg.norm(mean), atol=1e-6)


def test_a_rebuild_rewrites_only_the_deer_rows_whose_profile_changed(engine, random_world):
    matching.build_profiles(engine, VERSION, FAMILY)
    first, second = random_world["deer"][:2]

    def stamps():
        with engine.connect() as conn:
            return dict(conn.execute(sa.select(t.deer.c.id, t.deer.c.updated_at)).all())

    before = stamps()
    with engine.begin() as conn:
        add_detection(conn, "buck", random_world["labelled"][second][0], deer_id=first, reviewed=True)
    matching.build_profiles(engine, VERSION, FAMILY)
    after = stamps()
    assert after[first] > before[first]
    assert {d: s for d, s in after.items() if d != first} == {d: s for d, s in before.items() if d != first}
    with engine.connect() as conn:
        mirrored = np.asarray(conn.execute(sa.select(t.deer.c.feature_vector).where(t.deer.c.id == first)).scalar_one())
    np.testing.assert_allclose(mirrored, profiles(engine)[first], atol=1e-7)


def test_chunked_matching_equals_one_chunk_and_hnsw_finds_the_exact_best(engine, random_world):
    matching.build_profiles(engine, VERSION, FAMILY)
    one = matching.assign_detections(engine, VERSION, threshold=0.3, chunk_size=10_000, antler_tolerance=None)
    log_one, stored_one = _run(engine, one.run_id)
    chunked = matching.assign_detections(engine, VERSION, threshold=0.3, chunk_size=7, antler_tolerance=None)
    log_chunked, stored_chunked = _run(engine, chunked.run_id)
    assert one.considered == chunked.considered == 40 and len(log_one) == 40
    assert (one.assigned, one.no_candidate) == (chunked.assigned, chunked.no_candidate)
    assert 0 < one.assigned < 40  # the threshold decides something here
    assert log_chunked == log_one
    assert stored_chunked == stored_one and sum(matched for _, matched in stored_one.values()) == one.assigned

    hnsw = matching.assign_detections(engine, VERSION, threshold=0.3, search="hnsw", chunk_size=9,
                                      antler_tolerance=None)
    log_hnsw, _ = _run(engine, hnsw.run_id)
    assert {d: row[0] for d, row in log_hnsw.items()} == {d: row[0] for d, row in log_one.items()}
    with engine.connect() as conn:
        config = conn.execute(sa.select(t.reid_assignment_runs.c.config)
                              .where(t.reid_assignment_runs.c.run_id == hnsw.run_id)).scalar_one()
    assert config["search"] == "hnsw"
    with pytest.raises(ValueError, match="search must be one of"):
        matching.assign_detections(engine, VERSION, search="ivfflat")


def test_vectors_loaded_in_binary_chunks_equal_the_stored_ones(engine, random_world):
    with engine.connect() as conn:
        ids, stored = load_embeddings(conn, VERSION)
        wanted = ids[::-1] + [random_world["no_embedding"]]
        found, matrix = load_vectors(conn, VERSION, wanted, chunk=5)
    assert found.tolist() == [True] * len(ids) + [False]
    np.testing.assert_array_equal(matrix[:-1], stored[::-1])
    assert not matrix[-1].any()


def test_blocked_evaluation_matching_equals_the_per_pair_sex_rule(monkeypatch):
    rng = np.random.default_rng(5)
    names = [f"deer-{i}" for i in range(6)]
    prof = eval_profiles.Profiles(names=names, vectors=_unit(rng.normal(size=(6, 8))).astype(np.float64),
                                  sexes=["buck", "doe", "unknown", "buck", "doe", "fawn"])
    queries = _unit(rng.normal(size=(23, 8)))
    classes = [CLASSES[i % len(CLASSES)] for i in range(23)]
    excluded = rng.random((23, 6)) < 0.2
    monkeypatch.setattr(eval_profiles, "QUERY_BLOCK", 4)
    got = eval_profiles.match_to_profiles(queries, prof, classes, excluded)
    for q in range(23):  # the definition, one pair at a time
        sims = [float(queries[q] @ prof.vectors[p]) if sex_compatible(classes[q], prof.sexes[p]) and not excluded[q, p]
                else -np.inf for p in range(6)]
        best = int(np.argmax(sims))
        if np.isfinite(sims[best]):
            assert got.best_name[q] == names[best] and got.best_similarity[q] == pytest.approx(sims[best])
        else:
            assert got.best_name[q] is None and np.isnan(got.best_similarity[q])


def test_grouped_evaluation_profiles_are_each_deers_mean():
    rng = np.random.default_rng(6)
    labels = [f"d{i % 5}" for i in rng.permutation(40)]
    rows = _unit(rng.normal(size=(40, 8)))
    built = eval_profiles.build_profiles(rows, labels)
    assert built.names == sorted(set(labels))
    for p, name in enumerate(built.names):
        mean = rows[[i for i, label in enumerate(labels) if label == name]].mean(axis=0)
        np.testing.assert_allclose(built.vectors[p], mean / np.linalg.norm(mean), atol=1e-6)


def test_distributions_in_blocks_and_thinned_equal_the_full_ones(monkeypatch):
    rng = np.random.default_rng(7)
    prof = eval_profiles.Profiles(names=["a", "b", "c"], vectors=_unit(rng.normal(size=(3, 8))), sexes=["unknown"] * 3)
    queries = _unit(rng.normal(size=(11, 8)))
    labels = ["a", "b", "c", "new"] * 2 + ["a", "b", "new"]
    full_same, full_different = scores.similarity_distributions(queries, labels, prof)
    assert full_same.size == 8 and full_different.size == 11 * 3 - 8
    monkeypatch.setattr(scores, "_QUERY_BLOCK", 2)
    same, different = scores.similarity_distributions(queries, labels, prof)
    np.testing.assert_allclose(same, full_same, atol=1e-6)  # float32 products: the block size may move the last bit
    np.testing.assert_allclose(different, full_different, atol=1e-6)
    _, thinned = scores.similarity_distributions(queries, labels, prof, max_different=10)
    np.testing.assert_allclose(thinned, full_different[::3], atol=1e-6)  # 25 pairs, every 3rd: 9 <= 10


def test_retrieval_on_a_sample_of_queries_is_the_metric_of_that_sample():
    rng = np.random.default_rng(8)
    gallery, gallery_ids = _unit(rng.normal(size=(30, 8))), [f"d{i % 6}" for i in range(30)]
    queries, query_ids = _unit(rng.normal(size=(25, 8))), [f"d{i % 7}" for i in range(25)]  # d6: not in gallery
    full = scores.retrieval_metrics(queries, query_ids, gallery, gallery_ids)
    assert full["n_queries"] == 22 and "sampled_from" not in full
    sampled = scores.retrieval_metrics(queries, query_ids, gallery, gallery_ids, max_queries=8)
    assert (sampled["n_queries"], sampled["sampled_from"]) == (8, 22)
    assert sampled == scores.retrieval_metrics(queries, query_ids, gallery, gallery_ids, max_queries=8)
    eligible = np.flatnonzero([q != "d6" for q in query_ids])
    chosen = np.sort(np.random.default_rng(0).choice(eligible, size=8, replace=False))
    subset = scores.retrieval_metrics(queries[chosen], [query_ids[i] for i in chosen], gallery, gallery_ids)
    assert (sampled["rank1"], sampled["mAP"]) == (subset["rank1"], subset["mAP"])
    assert scores.retrieval_metrics(queries, query_ids, gallery, gallery_ids, max_queries=22) == full


def test_ranks_found_by_binary_search_equal_a_stable_sort_of_the_gallery(monkeypatch):
    # unit vectors with entries +-0.5 or one +-1: every cosine is an exact multiple of 0.25, so many tie
    import itertools

    choices = np.array([*itertools.product([-0.5, 0.5], repeat=4), *np.eye(4), *-np.eye(4)], dtype=np.float32)
    rng = np.random.default_rng(9)
    gallery, gallery_ids = choices[rng.integers(len(choices), size=60)], [f"d{i % 5}" for i in range(60)]
    queries, query_ids = choices[rng.integers(len(choices), size=30)], [f"d{i % 5}" for i in range(30)]
    monkeypatch.setattr(scores, "_RANK_BLOCK", 7)
    got = scores.retrieval_metrics(queries, query_ids, gallery, gallery_ids)
    hits, aps = 0, []
    for i in range(30):  # the definition: a stable descending sort of the whole gallery
        order = np.argsort(-(gallery @ queries[i]), kind="stable")
        relevant = np.array([gallery_ids[j] == query_ids[i] for j in order])
        hits += int(relevant[0])
        aps.append(np.mean(np.cumsum(relevant)[relevant] / (np.flatnonzero(relevant) + 1)))
    assert got["rank1"] == pytest.approx(hits / 30) and got["mAP"] == pytest.approx(np.mean(aps))
