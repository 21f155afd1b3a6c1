"""Hand-computed checks of the evaluation metrics, split, matching and plots."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from deer_reid_assets.core.evaluation.plots import comparison_plot, evaluation_plot
from deer_reid_assets.core.evaluation.profiles import Profiles, build_profiles, check_blocks, match_to_profiles
from deer_reid_assets.core.evaluation.report import EvaluationReport, compare_reports, evaluate
from deer_reid_assets.core.evaluation.scores import (
    ASSIGNMENT_KEYS,
    assignment_metrics,
    best_threshold,
    retrieval_metrics,
    similarity_distributions,
    threshold_sweep,
)
from deer_reid_assets.core.evaluation.sex import sex_compatible
from deer_reid_assets.core.evaluation.splits import EvalSplit, identity_split, split_roles


def unit(angle_degrees: float) -> np.ndarray:
    """2-D unit vector at the given angle; cos(a - b) is the similarity of two of them."""
    radians = math.radians(angle_degrees)
    return np.array([math.cos(radians), math.sin(radians)])


def row_at(sweep: pd.DataFrame, threshold: float) -> dict:
    rows = sweep[np.isclose(sweep["threshold"], threshold)]
    assert len(rows) == 1
    return rows.iloc[0].to_dict()


# --------------------------------------------------------------------------- assignment metrics

# Five queries, profiles exist for A and B only:
#   q0 true A -> A 0.90  correct
#   q1 true B -> A 0.70  wrong
#   q2 true C -> B 0.60  wrong (C has no profile: open set)
#   q3 true A -> A 0.30  below 0.40: unassigned
#   q4 true B -> None    no compatible profile: unassigned
BEST_NAME = np.array(["A", "A", "B", "A", None], dtype=object)
BEST_SIM = np.array([0.90, 0.70, 0.60, 0.30, np.nan])
TRUTH = ["A", "B", "C", "A", "B"]
PROFILED = {"A", "B"}


def test_assignment_metrics_hand_computed():
    m = assignment_metrics(BEST_NAME, BEST_SIM, TRUTH, 0.40, PROFILED)
    assert m["n_queries"] == 5
    assert m["n_assigned"] == 3
    assert m["n_correct"] == 1
    assert m["n_wrong"] == 2
    assert m["n_profiled_queries"] == 4
    assert m["assignment_rate"] == pytest.approx(3 / 5)
    assert m["false_match_rate"] == pytest.approx(2 / 3)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 4)
    assert tuple(m) == ASSIGNMENT_KEYS


def test_assignment_metrics_threshold_is_inclusive_and_nothing_assigned_gives_zero_fmr():
    at_030 = assignment_metrics(BEST_NAME, BEST_SIM, TRUTH, 0.30, PROFILED)
    assert (at_030["n_assigned"], at_030["n_correct"]) == (4, 2)
    nothing = assignment_metrics(BEST_NAME, BEST_SIM, TRUTH, 0.95, PROFILED)
    assert nothing["n_assigned"] == 0
    assert nothing["assignment_rate"] == 0.0
    assert nothing["false_match_rate"] == 0.0
    assert nothing["precision"] == 1.0
    assert nothing["recall"] == 0.0


def test_assignment_metrics_no_queries_and_validation():
    empty = assignment_metrics(np.array([], dtype=object), np.array([]), [], 0.4, set())
    assert empty["n_queries"] == 0 and empty["assignment_rate"] == 0.0 and empty["recall"] == 0.0
    with pytest.raises(ValueError, match="true_identity"):
        assignment_metrics(BEST_NAME, BEST_SIM, TRUTH[:4], 0.4, PROFILED)
    with pytest.raises(ValueError, match="best_similarity"):
        assignment_metrics(BEST_NAME, BEST_SIM[:4], TRUTH, 0.4, PROFILED)
    with pytest.raises(ValueError, match="threshold"):
        assignment_metrics(BEST_NAME, BEST_SIM, TRUTH, float("nan"), PROFILED)


def test_threshold_sweep_rows_and_monotonicity():
    sweep = threshold_sweep(BEST_NAME, BEST_SIM, TRUTH, PROFILED)
    assert list(sweep.columns) == ["threshold", *ASSIGNMENT_KEYS]
    assert len(sweep) == 101
    assert sweep["threshold"].iloc[0] == 0.0 and sweep["threshold"].iloc[-1] == 1.0

    r30 = row_at(sweep, 0.30)
    assert (r30["n_assigned"], r30["n_correct"], r30["n_wrong"]) == (4, 2, 2)
    assert r30["assignment_rate"] == pytest.approx(0.8)
    assert r30["false_match_rate"] == pytest.approx(0.5)
    assert r30["recall"] == pytest.approx(0.5)
    r65 = row_at(sweep, 0.65)
    assert (r65["n_assigned"], r65["n_correct"], r65["n_wrong"]) == (2, 1, 1)
    assert r65["assignment_rate"] == pytest.approx(0.4)
    assert r65["false_match_rate"] == pytest.approx(0.5)
    assert r65["recall"] == pytest.approx(0.25)

    for column in ("n_assigned", "n_correct", "n_wrong", "assignment_rate", "recall"):
        assert (np.diff(sweep[column].to_numpy()) <= 0).all(), column


def test_best_threshold_picks_highest_rate_then_highest_threshold():
    sweep = threshold_sweep(BEST_NAME, BEST_SIM, TRUTH, PROFILED)
    # FMR <= 5% only when q0 alone is assigned: thresholds 0.71..0.90, rate 0.2 -> highest 0.90.
    best = best_threshold(sweep, 0.05)
    assert best is not None
    assert best["threshold"] == pytest.approx(0.90)
    assert best["assignment_rate"] == pytest.approx(0.2)
    assert best["false_match_rate"] == 0.0
    # FMR <= 50%: thresholds 0.00..0.30 assign 4 (2 wrong) -> rate 0.8; ties -> 0.30.
    loose = best_threshold(sweep, 0.5)
    assert loose["threshold"] == pytest.approx(0.30)
    assert loose["assignment_rate"] == pytest.approx(0.8)
    json.dumps(loose)  # plain Python types


def test_best_threshold_none_when_every_assignment_is_wrong():
    sweep = threshold_sweep(np.array(["A"], dtype=object), np.array([0.8]), ["B"], {"A", "B"})
    assert best_threshold(sweep, 0.05) is None


# --------------------------------------------------------------------------- retrieval


def test_retrieval_rank1_and_map_hand_computed():
    gallery = np.stack([unit(0), unit(30), unit(60), unit(90)])
    gallery_ids = ["A", "B", "A", "C"]
    queries = np.stack([unit(10), unit(5), unit(80), unit(45)])
    query_ids = ["A", "B", "C", "D"]  # D is not in the gallery: skipped
    # q A@10: A, B, A, C -> AP (1/1 + 2/3)/2, hit;  q B@5: A, B, ... -> AP 1/2, miss;
    # q C@80: C first -> AP 1, hit.
    result = retrieval_metrics(queries, query_ids, gallery, gallery_ids)
    assert result["n_queries"] == 3
    assert result["rank1"] == pytest.approx(2 / 3)
    assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2 + 1) / 3)


def test_retrieval_ties_keep_gallery_order():
    gallery = np.stack([unit(0), unit(0)])
    result = retrieval_metrics(unit(0)[None, :], ["A"], gallery, ["B", "A"])
    assert result["rank1"] == 0.0
    assert result["mAP"] == pytest.approx(1 / 2)
    swapped = retrieval_metrics(unit(0)[None, :], ["A"], gallery, ["A", "B"])
    assert swapped["rank1"] == 1.0 and swapped["mAP"] == 1.0
    # Twenty tied items interleaved with twenty worse ones (an unstable sort reorders these):
    # the A items at gallery positions 6 and 34 are tied items number 4 and 18.
    interleaved = np.stack([unit(0) if i % 2 == 0 else unit(30) for i in range(40)])
    tied_ids = ["B"] * 40
    tied_ids[6] = tied_ids[34] = "A"
    long = retrieval_metrics(unit(0)[None, :], ["A"], interleaved, tied_ids)
    assert long["mAP"] == pytest.approx((1 / 4 + 2 / 18) / 2)


def test_retrieval_empty_gallery_and_validation():
    result = retrieval_metrics(np.stack([unit(0)]), ["A"], np.empty((0, 2)), [])
    assert result == {"rank1": 0.0, "mAP": 0.0, "n_queries": 0}
    with pytest.raises(ValueError, match="gallery_ids"):
        retrieval_metrics(np.stack([unit(0)]), ["A"], np.stack([unit(0)]), ["A", "B"])
    with pytest.raises(ValueError, match="query_emb"):
        retrieval_metrics(unit(0), ["A"], np.stack([unit(0)]), ["A"])
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_metrics(np.array([[np.nan, 1.0]]), ["A"], np.stack([unit(0)]), ["A"])
    with pytest.raises(ValueError, match="dimension"):
        retrieval_metrics(np.ones((1, 3)), ["A"], np.stack([unit(0)]), ["A"])


# --------------------------------------------------------------------------- profiles and matching


def test_build_profiles_normalised_mean_sorted_names_and_majority_sex():
    embeddings = np.stack([unit(0), unit(90), unit(0), unit(10), unit(20)])
    profiles = build_profiles(
        embeddings, ["zed", "zed", "amy", "amy", "amy"], ["buck", "doe", "doe", "fawn", "doe"]
    )
    assert profiles.names == ["amy", "zed"]
    np.testing.assert_allclose(profiles.vectors[1], unit(45))
    np.testing.assert_allclose(profiles.vectors[0], unit(10), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(profiles.vectors, axis=1), 1.0)
    assert profiles.sexes == ["doe", "unknown"]  # amy: 2 doe votes; zed: 1-1 tie
    assert build_profiles(embeddings[:1], ["x"]).sexes == ["unknown"]


def test_build_profiles_validation():
    with pytest.raises(ValueError, match="identities"):
        build_profiles(np.stack([unit(0)]), ["a", "b"])
    with pytest.raises(ValueError, match="sexes"):
        build_profiles(np.stack([unit(0)]), ["a"], ["buck", "doe"])
    with pytest.raises(ValueError, match="zero vector"):
        build_profiles(np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "a"])
    with pytest.raises(ValueError, match="zero-norm"):
        build_profiles(np.zeros((1, 2)), ["a"])


def test_sex_compatible_rule():
    assert sex_compatible("buck", "buck") and sex_compatible("doe", "doe")
    assert not sex_compatible("buck", "doe") and not sex_compatible("doe", "buck")
    assert not sex_compatible("Buck", "DOE")
    for query in ("fawn", "unknown", None):
        assert sex_compatible(query, "buck") and sex_compatible(query, "doe")
    assert sex_compatible("buck", "unknown") and sex_compatible("doe", "unknown")
    assert sex_compatible("buck", None)
    assert not sex_compatible("buck", "fawn")  # same as the SQL rule in core.matching


def test_match_to_profiles_sex_rule():
    profiles = Profiles(
        names=["bucky", "dotty", "mystery"],
        vectors=np.stack([unit(0), unit(10), unit(60)]),
        sexes=["buck", "doe", "unknown"],
    )
    query = unit(9)[None, :].repeat(5, axis=0)
    matches = match_to_profiles(query, profiles, ["buck", "doe", "fawn", "unknown", None])
    # A buck query never takes the closer doe profile; everything else takes the doe.
    assert list(matches.best_name) == ["bucky", "dotty", "dotty", "dotty", "dotty"]
    np.testing.assert_allclose(matches.best_similarity, np.cos(np.radians([9, 1, 1, 1, 1])))
    without_classes = match_to_profiles(query[:1], profiles)
    assert list(without_classes.best_name) == ["dotty"]

    does_only = Profiles(names=["dotty"], vectors=unit(10)[None, :], sexes=["doe"])
    none = match_to_profiles(query[:1], does_only, ["buck"])
    assert none.best_name[0] is None and np.isnan(none.best_similarity[0])
    unknown_profile = Profiles(names=["m"], vectors=unit(60)[None, :], sexes=["unknown"])
    assert match_to_profiles(query[:1], unknown_profile, ["buck"]).best_name[0] == "m"


def test_match_to_profiles_ties_go_to_first_profile():
    profiles = Profiles(names=["alpha", "beta"], vectors=np.stack([unit(20), unit(20)]),
                        sexes=["unknown", "unknown"])
    assert match_to_profiles(unit(20)[None, :], profiles).best_name[0] == "alpha"
    mirrored = Profiles(names=["alpha", "beta"], vectors=np.stack([unit(0), unit(40)]),
                        sexes=["unknown", "unknown"])
    assert match_to_profiles(unit(20)[None, :], mirrored).best_name[0] == "alpha"


def test_match_to_profiles_empty_cases_and_validation():
    profiles = Profiles(names=["a"], vectors=unit(0)[None, :], sexes=["buck"])
    empty_queries = match_to_profiles(np.empty((0, 2)), profiles)
    assert empty_queries.best_name.size == 0 and empty_queries.best_similarity.size == 0
    no_profiles = Profiles(names=[], vectors=np.empty((0, 2)), sexes=[])
    result = match_to_profiles(np.stack([unit(0)]), no_profiles)
    assert result.best_name[0] is None and np.isnan(result.best_similarity[0])
    with pytest.raises(ValueError, match="query_classes"):
        match_to_profiles(np.stack([unit(0)]), profiles, ["buck", "doe"])
    with pytest.raises(ValueError, match="non-finite"):
        match_to_profiles(np.array([[np.inf, 0.0]]), profiles)


def test_similarity_distributions():
    profiles = Profiles(names=["a", "b"], vectors=np.stack([unit(0), unit(90)]),
                        sexes=["unknown", "unknown"])
    same, different = similarity_distributions(np.stack([unit(30), unit(0)]), ["a", "new"], profiles)
    np.testing.assert_allclose(same, [math.cos(math.radians(30))])
    np.testing.assert_allclose(sorted(different), sorted([0.5, 1.0, 0.0]), atol=1e-12)


# --------------------------------------------------------------------------- split


def make_labels(n_identities: int, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    ids, identities = [], []
    for k in range(n_identities):
        for _ in range(int(rng.integers(1, 8))):
            ids.append(f"det-{len(ids):05d}")
            identities.append(f"deer-{k:03d}")
    return ids, identities


def test_identity_split_partition_and_guarantees():
    ids, identities = make_labels(200)
    split = identity_split(ids, identities, seed=3)
    roles = split_roles(split, len(ids))  # raises unless the split is an exact partition
    assert set(roles) == {"gallery", "val_query", "test_query"}
    labels = np.asarray(identities)
    held_out = set(split.held_out_identities)
    assert 0 < len(held_out) < 200
    assert not held_out & set(labels[split.gallery])
    for identity in set(identities) - held_out:
        assert (roles[labels == identity] == "gallery").any(), identity
        if (labels == identity).sum() == 1:
            assert roles[labels == identity][0] == "gallery"
    # Fractions roughly as configured (hash-based, so not exact).
    assert 0.1 < len(held_out) / 200 < 0.3
    kept = ~np.isin(labels, list(held_out))
    assert 0.45 < (roles[kept] == "gallery").mean() < 0.7  # 0.5 plus forced gallery items
    queries = roles[roles != "gallery"]
    assert 0.4 < (queries == "val_query").mean() < 0.6
    assert split.sizes() == {
        "n_gallery": split.gallery.size, "n_val_query": split.val_query.size,
        "n_test_query": split.test_query.size, "n_held_out_identities": len(held_out),
    }


def test_identity_split_is_deterministic_and_seeded():
    ids, identities = make_labels(60)
    a, b = identity_split(ids, identities, seed=7), identity_split(ids, identities, seed=7)
    assert (split_roles(a, len(ids)) == split_roles(b, len(ids))).all()
    assert a.held_out_identities == b.held_out_identities
    c = identity_split(ids, identities, seed=8)
    assert (split_roles(a, len(ids)) != split_roles(c, len(ids))).any()
    assert c.held_out_identities != a.held_out_identities


def test_identity_split_stable_when_detections_are_added():
    ids, identities = make_labels(80)
    before = split_roles(identity_split(ids, identities, seed=5), len(ids))

    # New identities only: nothing old may move.
    more_ids = ids + [f"new-{i}" for i in range(40)]
    more_identities = identities + [f"newdeer-{i % 10}" for i in range(40)]
    after = split_roles(identity_split(more_ids, more_identities, seed=5), len(more_ids))
    assert (after[: len(ids)] == before).all()

    # New detections of existing identities: only a forced gallery item may return to the
    # queries, and only when its identity gains another gallery detection.
    extra_ids = ids + [f"extra-{i}" for i in range(200)]
    extra_identities = identities + [identities[(i * 7) % len(identities)] for i in range(200)]
    grown = split_roles(identity_split(extra_ids, extra_identities, seed=5), len(extra_ids))
    labels = np.asarray(extra_identities)
    moved = np.flatnonzero(grown[: len(ids)] != before)
    assert moved.size < 0.05 * len(ids)
    for i in moved:
        assert before[i] == "gallery" and grown[i] != "gallery"
        new_of_identity = np.flatnonzero(labels[len(ids):] == labels[i]) + len(ids)
        assert (grown[new_of_identity] == "gallery").any()


def test_identity_split_extremes_and_validation():
    ids, identities = make_labels(30)
    none_held = identity_split(ids, identities, held_out_fraction=0.0)
    assert none_held.held_out_identities == ()
    all_held = identity_split(ids, identities, held_out_fraction=1.0)
    assert all_held.gallery.size == 0 and len(all_held.held_out_identities) == 30
    with pytest.raises(ValueError, match="unique"):
        identity_split(["a", "a"], ["x", "x"])
    with pytest.raises(ValueError, match="identities"):
        identity_split(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="gallery_fraction"):
        identity_split(["a"], ["x"], gallery_fraction=1.5)
    with pytest.raises(ValueError, match="range"):
        split_roles(none_held, len(ids) - 1)
    with pytest.raises(ValueError, match="cover"):
        split_roles(none_held, len(ids) + 1)


# --------------------------------------------------------------------------- evaluate end to end

DIM = 32


def clustered_dataset() -> tuple[np.ndarray, list[str], list[str], list[str], EvalSplit]:
    """Six deer, eight detections each, clustered tightly around orthogonal axes.

    Deer 0-4: detections 0-3 gallery, 4-7 test queries; deer 5 has no gallery item (open set).
    One query of deer 2 is replaced by deer 3's axis, so it is wrongly assigned to deer 3.
    Deer alternate buck/doe; classifications are the true sexes.
    """
    rng = np.random.default_rng(0)
    embeddings, ids, identities, classes = [], [], [], []
    gallery, test = [], []
    for deer in range(6):
        for k in range(8):
            vector = np.eye(DIM)[deer] + rng.normal(0, 0.03, DIM)
            embeddings.append(vector / np.linalg.norm(vector))
            index = len(ids)
            ids.append(f"d{deer}-{k}")
            identities.append(f"deer{deer}")
            classes.append("buck" if deer % 2 == 0 else "doe")
            (gallery if deer < 5 and k < 4 else test).append(index)
    wrong = ids.index("d2-7")
    embeddings[wrong] = np.eye(DIM)[3]
    classes[wrong] = "unknown"  # deer 3 is a doe, so an unknown class may compare with it
    split = EvalSplit(gallery=np.array(gallery), val_query=np.array([], dtype=np.intp),
                      test_query=np.array(test), held_out_identities=("deer5",))
    return np.stack(embeddings), ids, identities, classes, split


def test_evaluate_end_to_end_on_clustered_vectors():
    embeddings, ids, identities, classes, split = clustered_dataset()
    report = evaluate(embeddings, ids, identities, classes, split, threshold=0.4)

    a = report.assignment
    assert (a["n_queries"], a["n_assigned"], a["n_correct"], a["n_wrong"]) == (28, 20, 19, 1)
    assert a["assignment_rate"] == pytest.approx(20 / 28)
    assert a["false_match_rate"] == pytest.approx(1 / 20)
    assert a["recall"] == pytest.approx(19 / 20)
    assert report.n_profiles == 5
    assert report.retrieval["n_queries"] == 20
    assert report.retrieval["rank1"] == pytest.approx(19 / 20)
    assert 0.9 < report.retrieval["mAP"] < 1.0

    # Same-deer similarities: 19 tight queries (~0.99) plus the moved one (~0); different: ~0.
    assert report.same_similarities.size == 20
    assert report.different_similarities.size == 28 * 5 - 20
    assert np.sort(report.same_similarities)[1] > 0.95
    assert report.mean_true_match_similarity == pytest.approx(report.same_similarities.mean())
    # Best threshold: all 20 profiled queries assigned with FMR 1/20 <= 5%, up to the lowest
    # genuine same-deer similarity; ties go to the highest such threshold.
    lowest_genuine = np.sort(report.same_similarities)[1]
    assert report.best["assignment_rate"] == pytest.approx(20 / 28)
    assert report.best["threshold"] == pytest.approx(math.floor(lowest_genuine * 100) / 100)

    per_query = report.per_query
    assert len(per_query) == 28 and per_query["correct"].sum() == 19
    assert per_query.loc[per_query["detection_id"] == "d2-7", "best_name"].item() == "deer3"

    summary = json.loads(report.to_json())
    assert summary["summary"]["false_match_rate"] == pytest.approx(0.05)
    assert summary["split"]["n_test_query"] == 28
    assert len(summary["sweep"]) == 101
    assert set(summary["buck_misidentification"]) == {"n_bucks_assigned", "n_misidentified", "rate"}
    assert "| assignment_rate | 0.714 |" in report.markdown_table()


def test_evaluate_sex_rule_blocks_cross_sex_match():
    embeddings, ids, identities, classes, split = clustered_dataset()
    classes[ids.index("d2-7")] = "buck"  # deer 3 is a doe: the moved query must stay unassigned
    report = evaluate(embeddings, ids, identities, classes, split)
    assert (report.assignment["n_assigned"], report.assignment["n_wrong"]) == (19, 0)
    # Without classifications every query compares with every profile.
    unrestricted = evaluate(embeddings, ids, identities, None, split)
    assert unrestricted.assignment["n_wrong"] == 1


def test_evaluate_edge_cases_do_not_crash():
    embeddings, ids, identities, classes, split = clustered_dataset()
    no_queries = evaluate(embeddings, ids, identities, classes, split, query_set="val")
    assert no_queries.assignment["n_queries"] == 0 and no_queries.best is None
    assert math.isnan(no_queries.mean_true_match_similarity)
    assert json.loads(no_queries.to_json())["summary"]["mean_true_match_similarity"] is None

    everyone = np.arange(len(ids))
    no_gallery = EvalSplit(gallery=np.array([], dtype=np.intp), val_query=np.array([], dtype=np.intp),
                           test_query=everyone, held_out_identities=())
    report = evaluate(embeddings, ids, identities, classes, no_gallery)
    assert report.n_profiles == 0 and report.assignment["n_assigned"] == 0
    assert report.retrieval["n_queries"] == 0 and report.best is None
    json.loads(report.to_json())
    assert evaluation_plot(report, "empty").startswith(b"\x89PNG")


def test_evaluate_validation():
    embeddings, ids, identities, classes, split = clustered_dataset()
    with pytest.raises(ValueError, match="identities"):
        evaluate(embeddings, ids, identities[:-1], classes, split)
    with pytest.raises(ValueError, match="classifications"):
        evaluate(embeddings, ids, identities, classes[:-1], split)
    with pytest.raises(ValueError, match="embeddings"):
        evaluate(embeddings[0], ids, identities, classes, split)
    with pytest.raises(ValueError, match="query_set"):
        evaluate(embeddings, ids, identities, classes, split, query_set="train")
    bad = EvalSplit(gallery=np.array([999]), val_query=split.val_query,
                    test_query=split.test_query, held_out_identities=())
    with pytest.raises(ValueError, match="split.gallery"):
        evaluate(embeddings, ids, identities, classes, bad)


# --------------------------------------------------------------------------- block-wise (ensemble) profiles


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def two_model_dataset(seed: int = 3):
    """Model A (dim 6) and model B (dim 4) vectors for 5 deer x 6 detections: noisy clusters."""
    rng = np.random.default_rng(seed)
    labels = [f"deer{k}" for k in np.repeat(np.arange(5), 6)]
    centre = np.repeat(np.arange(5), 6)
    a = unit_rows(rng.normal(size=(5, 6))[centre] + rng.normal(0, 0.6, (30, 6)))
    b = unit_rows(rng.normal(size=(5, 4))[centre] + rng.normal(0, 0.6, (30, 4)))
    return a, b, labels


def ensemble_rows(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    return np.hstack([math.sqrt(w) * a, math.sqrt(1 - w) * b])


@pytest.mark.parametrize("w", [0.3, 0.6, 0.0, 1.0])
def test_block_profiles_give_weighted_sum_of_per_model_cosines(w):
    a, b, labels = two_model_dataset()
    gallery, queries = np.arange(0, 30, 2), np.arange(1, 30, 2)
    blocks = [(0, 6, w), (6, 10, 1 - w)]
    joint = build_profiles(ensemble_rows(a, b, w)[gallery], [labels[i] for i in gallery], blocks=blocks)
    # Reference: each model's own profile (normalised mean of that model's vectors), computed apart.
    prof_a = build_profiles(a[gallery], [labels[i] for i in gallery])
    prof_b = build_profiles(b[gallery], [labels[i] for i in gallery])
    assert joint.names == prof_a.names == prof_b.names
    expected = w * (a[queries] @ prof_a.vectors.T) + (1 - w) * (b[queries] @ prof_b.vectors.T)
    actual = ensemble_rows(a, b, w)[queries] @ joint.vectors.T
    np.testing.assert_allclose(actual, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(joint.vectors, axis=1), 1.0, atol=1e-12)
    # Block order does not matter; a zero-weight block stays exactly zero.
    reordered = build_profiles(ensemble_rows(a, b, w)[gallery], [labels[i] for i in gallery],
                               blocks=blocks[::-1])
    np.testing.assert_array_equal(reordered.vectors, joint.vectors)
    if w == 0.0:
        assert not joint.vectors[:, :6].any()


def test_block_profiles_differ_from_plain_profiles_when_blocks_matter():
    """Guard against blocks being silently ignored: with w = 0.5 the plain normalised mean of the
    concatenation is not the block-wise profile (per-block normalisation changes the direction)."""
    a, b, labels = two_model_dataset()
    rows = ensemble_rows(a, b, 0.5)
    plain = build_profiles(rows, labels)
    blocked = build_profiles(rows, labels, blocks=[(0, 6, 0.5), (6, 10, 0.5)])
    assert np.abs(plain.vectors - blocked.vectors).max() > 1e-3


def test_blocks_none_and_one_full_block_match_plain_profiles():
    a, _, labels = two_model_dataset()
    sexes = ["buck", "doe", "fawn"] * 10
    plain = build_profiles(a, labels, sexes)
    assert build_profiles(a, labels, sexes, blocks=None).vectors.tolist() == plain.vectors.tolist()
    single = build_profiles(a, labels, sexes, blocks=[(0, 6, 1.0)])
    np.testing.assert_allclose(single.vectors, plain.vectors, atol=1e-12)
    assert single.names == plain.names and single.sexes == plain.sexes


def test_evaluate_with_blocks_matches_independent_ensemble_matching():
    a, b, labels = two_model_dataset()
    w = 0.35
    ids = [f"det{i}" for i in range(30)]
    split = EvalSplit(gallery=np.arange(0, 30, 2), val_query=np.arange(1, 30, 2),
                      test_query=np.array([], dtype=np.intp), held_out_identities=())
    report = evaluate(ensemble_rows(a, b, w), ids, labels, None, split, query_set="val",
                      blocks=[(0, 6, w), (6, 10, 1 - w)])
    prof_a = build_profiles(a[split.gallery], [labels[i] for i in split.gallery])
    prof_b = build_profiles(b[split.gallery], [labels[i] for i in split.gallery])
    sims = w * (a[split.val_query] @ prof_a.vectors.T) + (1 - w) * (b[split.val_query] @ prof_b.vectors.T)
    np.testing.assert_allclose(report.per_query["best_similarity"], sims.max(axis=1), atol=1e-6)
    assert report.per_query["best_name"].tolist() == [prof_a.names[j] for j in sims.argmax(axis=1)]
    # blocks=None keeps the old behaviour exactly.
    plain = evaluate(a, ids, labels, None, split, query_set="val")
    assert plain.to_json() == evaluate(a, ids, labels, None, split, query_set="val", blocks=None).to_json()


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        ([], "at least one"),
        ("abc", "sequence"),
        ([(0, 6)], "tuple"),
        ([(0, 4, 0.5), (5, 10, 0.5)], "uncovered"),
        ([(0, 6, 0.5), (5, 10, 0.5)], "overlap"),
        ([(1, 10, 1.0)], "uncovered"),
        ([(0, 6, 0.5), (6, 9, 0.5)], "cover 9 columns"),
        ([(0, 6, 0.5), (6, 11, 0.5)], "cover 11 columns"),
        ([(0, 6, 0.5), (6, 10, 0.4)], "sum to 1"),
        ([(0, 6, 1.5), (6, 10, -0.5)], r"\[0, 1\]"),
        ([(0, 6, float("nan")), (6, 10, 0.5)], r"\[0, 1\]"),
        ([(0, 6, 0.5), (6, 6, 0.0), (6, 10, 0.5)], "start < stop"),
        ([(0.0, 6, 0.5), (6, 10, 0.5)], "integer"),
        ([(0, True, 0.5), (1, 10, 0.5)], "integer"),
        ([(0, 6, "0.5"), (6, 10, 0.5)], "number"),
        ([(-1, 6, 0.5), (6, 10, 0.5)], "start < stop"),
    ],
)
def test_bad_blocks_raise(blocks, match):
    a, b, labels = two_model_dataset()
    rows = ensemble_rows(a, b, 0.5)
    with pytest.raises(ValueError, match=match):
        check_blocks(blocks, 10)
    with pytest.raises(ValueError, match=match):
        build_profiles(rows, labels, blocks=blocks)
    split = EvalSplit(gallery=np.arange(10), val_query=np.arange(10, 30),
                      test_query=np.array([], dtype=np.intp), held_out_identities=())
    with pytest.raises(ValueError, match=match):
        evaluate(rows, [f"d{i}" for i in range(30)], labels, None, split, blocks=blocks)


def test_block_with_zero_mean_raises_and_valid_blocks_are_sorted():
    rows = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, -1.0]])  # block (2, 3) averages to zero
    with pytest.raises(ValueError, match=r"zero vector in block \(2, 3\)"):
        build_profiles(rows, ["a", "a"], blocks=[(0, 2, 0.5), (2, 3, 0.5)])
    # ...unless that block has weight 0 (it contributes nothing).
    profile = build_profiles(rows, ["a", "a"], blocks=[(0, 2, 1.0), (2, 3, 0.0)])
    np.testing.assert_allclose(profile.vectors, [[1.0, 0.0, 0.0]])
    assert check_blocks([(2, 3, 0.25), (np.int64(0), 2, np.float32(0.75))], 3) == [(0, 2, 0.75), (2, 3, 0.25)]


# --------------------------------------------------------------------------- comparison and plots


def stub_report(mean_similarity: float, rate: float) -> EvaluationReport:
    sweep = threshold_sweep(np.array(["A"], dtype=object), np.array([0.5]), ["A"], {"A"})
    return EvaluationReport(
        threshold=0.4, assignment={"assignment_rate": rate, "false_match_rate": 0.0},
        best=best_threshold(sweep), retrieval={"rank1": 1.0, "mAP": 1.0, "n_queries": 1},
        sweep=sweep, same_similarities=np.array([mean_similarity]),
        different_similarities=np.array([0.1]), mean_true_match_similarity=mean_similarity,
    )


def test_compare_reports_percentage_change_vs_baseline():
    table = compare_reports({"base": stub_report(0.5, 0.6), "tuned": stub_report(0.6, 0.8)}, "base")
    assert list(table["model"]) == ["base", "tuned"]
    assert table["mean_true_match_similarity_change_pct"].tolist() == pytest.approx([0.0, 20.0])
    assert table["assignment_rate"].tolist() == [0.6, 0.8]
    assert table["best_threshold"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="baseline"):
        compare_reports({"base": stub_report(0.5, 0.6)}, "missing")


def test_plots_return_png_bytes():
    embeddings, ids, identities, classes, split = clustered_dataset()
    report = evaluate(embeddings, ids, identities, classes, split)
    assert evaluation_plot(report, "clustered").startswith(b"\x89PNG")
    assert comparison_plot({"a": report, "b": stub_report(0.5, 0.6)}).startswith(b"\x89PNG")
    assert comparison_plot({}).startswith(b"\x89PNG")
