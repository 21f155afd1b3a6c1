"""Two-model ensemble: exact weighted-cosine vectors and the weight search on constructed data."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from deer_reid_assets.core.evaluation.ensemble import (
    CURVE_COLUMNS,
    DEFAULT_WEIGHTS,
    ROADMAP_WEIGHT,
    EnsembleChoice,
    _choose,
    ensemble_vectors,
    search_weights,
)
from deer_reid_assets.core.evaluation.profiles import check_blocks
from deer_reid_assets.core.evaluation.report import evaluate
from deer_reid_assets.core.evaluation.splits import EvalSplit, identity_split


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def ids_for(n: int) -> list[str]:
    return [f"det{i:04d}" for i in range(n)]


# --------------------------------------------------------------------------- ensemble_vectors


@pytest.mark.parametrize("w", [0.0, 0.25, 0.6, 1.0])
def test_ensemble_vectors_are_unit_and_give_weighted_cosines(w):
    rng = np.random.default_rng(0)
    a = unit_rows(rng.normal(size=(20, 7)))
    b = unit_rows(rng.normal(size=(20, 5)))
    vectors, blocks = ensemble_vectors(a, b, w)
    assert vectors.shape == (20, 12) and vectors.dtype == np.float64
    assert blocks == [(0, 7, w), (7, 12, 1 - w)]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(vectors @ vectors.T, w * (a @ a.T) + (1 - w) * (b @ b.T), atol=1e-12)
    check_blocks(blocks, vectors.shape[1])  # the blocks are valid for metrics


def test_ensemble_vectors_accept_float32_near_unit_rows_and_renormalise():
    rng = np.random.default_rng(1)
    a = unit_rows(rng.normal(size=(4, 3))).astype(np.float32) * np.float32(1.0004)
    b = unit_rows(rng.normal(size=(4, 2))).astype(np.float32)
    vectors, _ = ensemble_vectors(a, b, 0.5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
    empty, blocks = ensemble_vectors(np.zeros((0, 3)), np.zeros((0, 2)), 0.5)
    assert empty.shape == (0, 5) and blocks == [(0, 3, 0.5), (3, 5, 0.5)]


def test_ensemble_vectors_validation():
    rng = np.random.default_rng(2)
    a = unit_rows(rng.normal(size=(4, 3)))
    b = unit_rows(rng.normal(size=(4, 2)))
    for bad in (-0.01, 1.01, float("nan"), float("inf"), "x", None, True):
        with pytest.raises(ValueError, match="weight"):
            ensemble_vectors(a, b, bad)
    with pytest.raises(ValueError, match="rows"):
        ensemble_vectors(a, b[:3], 0.5)
    with pytest.raises(ValueError, match="2-D"):
        ensemble_vectors(a[0], b, 0.5)
    with pytest.raises(ValueError, match="unit norm"):
        ensemble_vectors(a * 2, b, 0.5)
    with pytest.raises(ValueError, match="unit norm"):
        ensemble_vectors(a, np.zeros((4, 2)), 0.5)
    nan = a.copy()
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        ensemble_vectors(nan, b, 0.5)
    with pytest.raises(ValueError, match="column"):
        ensemble_vectors(np.zeros((4, 0)), b, 0.5)


# --------------------------------------------------------------------------- constructed cases


def complementary_models(seed: int = 0, per_deer: int = 12, dim: int = 16, noise: float = 0.05):
    """8 deer. Model A puts deer 0-3 in tight, mutually orthogonal clusters but all of deer 4-7 in
    one shared cluster; model B does the reverse. Either model alone confuses half the herd; any
    interior mixture separates everyone (own-profile ~1 vs others <= max(w, 1 - w))."""
    rng = np.random.default_rng(seed)
    axes = np.eye(dim)
    a, b, labels = [], [], []
    for deer in range(8):
        centre_a = axes[deer] if deer < 4 else axes[4]
        centre_b = axes[deer - 4] if deer >= 4 else axes[4]
        for _ in range(per_deer):
            a.append(centre_a + rng.normal(0, noise, dim))
            b.append(centre_b + rng.normal(0, noise, dim))
            labels.append(f"deer{deer}")
    return unit_rows(np.array(a)), unit_rows(np.array(b)), labels


def strong_a_noise_b(seed: int = 0, n_deer: int = 40, per_deer: int = 16, spread: float = 0.2):
    """Model A: 40 deer in 32-d clusters that overlap slightly (A alone is good, not perfect);
    model B: pure noise in 4-d (its cosines are large and meaningless). Any weight on B only adds
    noise to the ranking."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(n_deer, 32)))
    deer = np.repeat(np.arange(n_deer), per_deer)
    a = unit_rows(centres[deer] + rng.normal(0, spread, (deer.size, 32)))
    b = unit_rows(rng.normal(size=(deer.size, 4)))
    return a, b, [f"deer{k}" for k in deer]


def rate(curve: pd.DataFrame, w: float) -> float:
    """Best-threshold assignment rate at weight w (0 when no threshold meets the budget)."""
    row = curve[np.isclose(curve["weight"], w)]
    assert len(row) == 1
    value = row["assignment_rate"].item()
    return 0.0 if math.isnan(value) else value


def test_search_picks_an_interior_weight_when_the_models_are_complementary():
    a, b, labels = complementary_models()
    ids = ids_for(len(labels))
    split = identity_split(ids, labels, seed=0, held_out_fraction=0.0)
    classes = ["buck" if int(label[-1]) % 2 else "doe" for label in labels]  # sex rule on, consistent
    choice = search_weights(a, b, ids, labels, classes, split)

    assert choice.meets_budget
    assert 0.0 < choice.weight < 1.0
    assert choice.false_match_rate <= 0.05
    assert choice.assignment_rate > rate(choice.curve, 0.0) + 0.5
    assert choice.assignment_rate > rate(choice.curve, 1.0) + 0.5
    assert choice.assignment_rate >= 0.95
    # Either model alone ranks badly; the mixture ranks (almost) perfectly.
    curve = choice.curve.set_index("weight")
    assert curve.loc[0.0, "rank1"] < 0.8 and curve.loc[1.0, "rank1"] < 0.8
    assert curve.loc[choice.weight, "rank1"] == 1.0
    # The optimum is a plateau over interior weights; ties go to the weight nearest the roadmap's.
    assert choice.weight == ROADMAP_WEIGHT
    assert choice.threshold == curve.loc[ROADMAP_WEIGHT, "best_threshold"]
    assert choice.roadmap["meets_budget"] and choice.roadmap["threshold"] == choice.threshold


def test_search_picks_model_a_when_model_b_is_noise():
    a, b, labels = strong_a_noise_b()
    ids = ids_for(len(labels))
    split = identity_split(ids, labels, seed=0)  # default: ~20% of deer held out (open set)
    choice = search_weights(a, b, ids, labels, None, split)
    assert choice.meets_budget
    assert choice.weight >= 0.9
    assert choice.false_match_rate <= 0.05
    # And from B's side: weight near 0 cannot meet the budget with a useful rate.
    assert rate(choice.curve, 0.0) < 0.05
    assert choice.assignment_rate > (choice.roadmap["assignment_rate"] or 0.0)
    curve = choice.curve.set_index("weight")
    assert curve.loc[1.0, "mAP"] > curve.loc[0.5, "mAP"] > curve.loc[0.0, "mAP"]


def test_the_chosen_point_is_the_best_row_of_the_curve():
    a, b, labels = strong_a_noise_b(seed=5, n_deer=20, per_deer=10, spread=0.25)
    ids = ids_for(len(labels))
    split = identity_split(ids, labels, seed=1)
    choice = search_weights(a, b, ids, labels, None, split, max_false_match_rate=0.1)
    ok = choice.curve.dropna(subset=["best_threshold"])
    assert not ok.empty and (ok["false_match_rate"] <= 0.1 + 1e-12).all()
    top = ok[ok["assignment_rate"] == ok["assignment_rate"].max()]
    top = top[top["rank1"] == top["rank1"].max()]
    distance = (top["weight"] - ROADMAP_WEIGHT).abs().round(9)
    expected = top[distance == distance.min()]["weight"].max()
    assert choice.weight == expected
    row = choice.curve.set_index("weight").loc[choice.weight]
    assert (choice.threshold, choice.assignment_rate, choice.false_match_rate) == (
        row["best_threshold"], row["assignment_rate"], row["false_match_rate"]
    )


def test_curve_matches_a_direct_evaluation_at_each_weight():
    a, b, labels = complementary_models(seed=3, per_deer=6)
    ids = ids_for(len(labels))
    split = identity_split(ids, labels, seed=2)
    weights = [0.0, 0.3, 1.0]
    choice = search_weights(a, b, ids, labels, None, split, weights=weights, query_set="test")
    assert choice.query_set == "test"
    for w in weights:
        vectors, blocks = ensemble_vectors(a, b, w)
        report = evaluate(vectors, ids, labels, None, split, query_set="test", blocks=blocks)
        row = choice.curve.set_index("weight").loc[w]
        assert row["rank1"] == report.retrieval["rank1"] and row["mAP"] == report.retrieval["mAP"]
        if report.best is None:
            assert math.isnan(row["best_threshold"])
        else:
            assert row["best_threshold"] == report.best["threshold"]
            assert row["assignment_rate"] == report.best["assignment_rate"]


# --------------------------------------------------------------------------- no weight meets the budget


def test_pure_noise_never_meets_the_budget():
    """Pure-noise vectors, and every validation query is of a deer with no profile (open set), so
    every assignment is wrong at every weight and threshold."""
    rng = np.random.default_rng(7)
    labels = [f"deer{k}" for k in np.repeat(np.arange(30), 6)]
    ids = ids_for(len(labels))
    a = unit_rows(rng.normal(size=(len(labels), 8)))
    b = unit_rows(rng.normal(size=(len(labels), 8)))
    split = identity_split(ids, labels, seed=0, held_out_fraction=0.5, gallery_fraction=1.0)
    assert split.val_query.size > 0 and split.gallery.size > 0
    choice = search_weights(a, b, ids, labels, None, split)

    assert not choice.meets_budget
    assert choice.threshold is None
    assert math.isnan(choice.assignment_rate) and math.isnan(choice.false_match_rate)
    assert choice.curve["best_threshold"].isna().all()
    # No retrieval query either (mAP 0 everywhere), so the tie-break gives the roadmap weight.
    assert choice.weight == ROADMAP_WEIGHT
    assert set(choice.roadmap) == {
        "weight", "threshold", "assignment_rate", "false_match_rate", "meets_budget", "rank1", "mAP"
    }
    assert choice.roadmap["weight"] == ROADMAP_WEIGHT and choice.roadmap["threshold"] is None
    assert choice.roadmap["meets_budget"] is False
    assert len(choice.curve) == len(DEFAULT_WEIGHTS) == 21
    assert list(choice.curve.columns) == list(CURVE_COLUMNS)
    assert choice.curve["weight"].tolist() == DEFAULT_WEIGHTS.tolist()

    payload = choice.to_json()
    text = json.dumps(payload, allow_nan=False)
    assert json.loads(text)["threshold"] is None and json.loads(text)["meets_budget"] is False
    assert len(payload["curve"]) == 21 and payload["curve"][0]["best_threshold"] is None


def test_without_a_qualifying_weight_the_highest_map_weight_is_chosen():
    """Impostors (open-set queries equal to a gallery deer's profile in both models) sit at
    similarity 1 for every w and make >= 10% of the queries, so no threshold meets a 5% budget;
    the genuine queries still rank best when A dominates (B is noise)."""
    a, b, labels = strong_a_noise_b(seed=2, n_deer=20, per_deer=10)
    base = identity_split(ids_for(len(labels)), labels, seed=0, held_out_fraction=0.0)
    gallery_labels = np.asarray(labels, dtype=object)[base.gallery]
    impostor_a, impostor_b, impostor_labels = [], [], []
    for k, name in enumerate(sorted(set(gallery_labels))[:6]):
        members = base.gallery[gallery_labels == name]
        for _ in range(2):
            impostor_a.append(a[members].mean(axis=0))
            impostor_b.append(b[members].mean(axis=0))
            impostor_labels.append(f"impostor{k}")
    n = len(labels)
    a_all = np.vstack([a, unit_rows(np.array(impostor_a))])
    b_all = np.vstack([b, unit_rows(np.array(impostor_b))])
    labels_all = labels + impostor_labels
    impostors = np.arange(n, n + len(impostor_labels))
    split = EvalSplit(gallery=base.gallery, val_query=np.concatenate([base.val_query, impostors]),
                      test_query=base.test_query, held_out_identities=tuple(sorted(set(impostor_labels))))
    assert impostors.size / split.val_query.size > 0.1

    choice = search_weights(a_all, b_all, ids_for(len(labels_all)), labels_all, None, split)
    assert not choice.meets_budget and choice.threshold is None
    curve = choice.curve
    best_map = curve["mAP"].max()
    assert choice.weight in curve.loc[curve["mAP"] == best_map, "weight"].tolist()
    assert choice.weight >= 0.9
    assert curve.set_index("weight").loc[choice.weight, "mAP"] > curve.set_index("weight").loc[0.0, "mAP"]
    json.dumps(choice.to_json(), allow_nan=False)


def row(weight, threshold=math.nan, rate=math.nan, rank1=0.5, mean_ap=0.5):
    return {"weight": weight, "best_threshold": threshold, "assignment_rate": rate,
            "false_match_rate": 0.0 if rate == rate else math.nan, "rank1": rank1, "mAP": mean_ap}


def test_selection_rule_and_tie_breaks_on_hand_made_curves():
    # Highest qualifying assignment rate wins, even over better rank-1 / mAP or non-qualifying rows.
    rows = [row(0.2, 0.5, 0.70, rank1=0.9, mean_ap=0.9), row(0.8, 0.4, 0.75, rank1=0.1, mean_ap=0.1),
            row(1.0, rank1=1.0, mean_ap=1.0)]
    assert _choose(rows) == (rows[1], True)
    # Tie on rate -> higher rank-1 ...
    rows = [row(0.6, 0.5, 0.7, rank1=0.80), row(0.9, 0.5, 0.7, rank1=0.85)]
    assert _choose(rows)[0]["weight"] == 0.9
    # ... then closest to 0.6 (0.55 vs 0.65 are equally close despite float error -> higher weight).
    rows = [row(w, 0.5, 0.7, rank1=0.8) for w in (0.0, 0.45, 0.55, 0.65, 1.0)]
    assert _choose(rows)[0]["weight"] == 0.65
    rows = [row(w, 0.5, 0.7, rank1=0.8) for w in (0.0, 0.45, 0.6, 0.65, 1.0)]
    assert _choose(rows)[0]["weight"] == 0.6
    # Nothing qualifies -> highest mAP (not rank-1), then rank-1, then closest to 0.6.
    rows = [row(0.3, rank1=0.9, mean_ap=0.5), row(0.7, rank1=0.4, mean_ap=0.6),
            row(1.0, rank1=0.5, mean_ap=0.6)]
    assert _choose(rows) == (rows[2], False)
    rows = [row(0.3, mean_ap=0.6), row(0.8, mean_ap=0.6), row(1.0, mean_ap=0.2)]
    assert _choose(rows) == (rows[1], False)  # 0.8 is nearer 0.6 than 0.3


# --------------------------------------------------------------------------- roadmap and validation


def test_roadmap_is_evaluated_even_when_not_in_the_grid():
    a, b, labels = complementary_models(seed=1, per_deer=6)
    ids = ids_for(len(labels))
    split = identity_split(ids, labels, seed=0, held_out_fraction=0.0)
    choice = search_weights(a, b, ids, labels, None, split, weights=[1.0, 0.0, 1.0])
    assert choice.curve["weight"].tolist() == [0.0, 1.0]  # deduplicated, ascending
    vectors, blocks = ensemble_vectors(a, b, ROADMAP_WEIGHT)
    direct = evaluate(vectors, ids, labels, None, split, query_set="val", blocks=blocks)
    assert direct.best is not None
    assert choice.roadmap["threshold"] == direct.best["threshold"]
    assert choice.roadmap["assignment_rate"] == direct.best["assignment_rate"]
    assert choice.roadmap["rank1"] == direct.retrieval["rank1"]
    assert choice.roadmap["mAP"] == direct.retrieval["mAP"]
    # The roadmap point (interior) beats both grid endpoints, yet the choice only comes from the grid.
    assert choice.roadmap["meets_budget"] is True
    assert choice.roadmap["assignment_rate"] > max(rate(choice.curve, 0.0), rate(choice.curve, 1.0))
    assert choice.weight in (0.0, 1.0)
    assert isinstance(choice, EnsembleChoice)


def test_search_weights_validation():
    a, b, labels = complementary_models(seed=1, per_deer=3)
    ids = ids_for(len(labels))
    split = identity_split(ids, labels, seed=0)
    with pytest.raises(ValueError, match="weight"):
        search_weights(a, b, ids, labels, None, split, weights=[0.5, 1.5])
    with pytest.raises(ValueError, match="at least one"):
        search_weights(a, b, ids, labels, None, split, weights=[])
    with pytest.raises(ValueError, match="max_false_match_rate"):
        search_weights(a, b, ids, labels, None, split, max_false_match_rate=-0.1)
    with pytest.raises(ValueError, match="query_set"):
        search_weights(a, b, ids, labels, None, split, query_set="train")
    with pytest.raises(ValueError, match="rows"):
        search_weights(a, b[:-1], ids, labels, None, split)
    with pytest.raises(ValueError, match="unit norm"):
        search_weights(a * 3, b, ids, labels, None, split)
    with pytest.raises(ValueError, match="identities"):
        search_weights(a, b, ids, labels[:-1], None, split)
