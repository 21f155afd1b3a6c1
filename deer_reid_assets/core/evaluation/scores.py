"""Scores of matched queries: assignment rate, false-match rate, precision, recall at a threshold,
the threshold sweep, rank-1 / mAP retrieval and the similarity distributions.

* assignment rate = assigned / queries; false-match rate (FMR) = wrong / assigned (0 when nothing
  is assigned); precision = 1 - FMR; recall = correct / queries whose true deer has a profile
  (0 when there are none). Every assignment of an open-set query (a deer with no profile) is wrong.
* rank-1 / mAP: each query whose identity occurs in the gallery is ranked against the gallery
  *detections* by cosine similarity; ties keep gallery order (stable sort). AP = mean of
  precision@k over the true-match positions. With no such query both are 0 and ``n_queries`` is 0.
  This is the project's one retrieval metric (:func:`retrieval_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from deer_reid_assets.core.evaluation.profiles import Profiles
from deer_reid_assets.core.vectors import check_dims, check_length, embedding_matrix, identity_labels, normalise_rows

DEFAULT_THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.01), 2)
ASSIGNMENT_KEYS = (
    "n_queries",
    "n_assigned",
    "n_correct",
    "n_wrong",
    "n_profiled_queries",
    "assignment_rate",
    "false_match_rate",
    "precision",
    "recall",
)

_QUERY_BLOCK = 1024  # queries per block of similarities to profiles (bounds memory to block x profiles)
_RANK_BLOCK = 256  # queries per block in retrieval (bounds memory to block x gallery)


@dataclass(frozen=True)
class _Outcomes:
    """Per-query facts independent of the threshold."""

    similarity: np.ndarray  # nan where no compatible profile
    matchable: np.ndarray  # has a compatible profile
    correct_if_assigned: np.ndarray
    n_profiled_queries: int


def _outcomes(
    best_name: Sequence[str | None],
    best_similarity: Sequence[float],
    true_identity: Sequence[str],
    profiled: set[str],
) -> _Outcomes:
    names = np.asarray(best_name, dtype=object)
    similarity = np.asarray(best_similarity, dtype=np.float64)
    truth = np.asarray(true_identity, dtype=object)
    if names.ndim != 1 or similarity.ndim != 1 or truth.ndim != 1:
        raise ValueError("best_name, best_similarity and true_identity must be 1-D")
    check_length(similarity, names.size, "best_similarity", "best_name")
    check_length(truth, names.size, "true_identity", "best_name")
    matchable = np.array([name is not None for name in names], dtype=bool) & ~np.isnan(similarity)
    if np.any(np.isinf(similarity[matchable])):
        raise ValueError("best_similarity contains infinite values")
    correct = matchable & (names == truth)
    n_profiled = int(sum(identity in profiled for identity in truth))
    return _Outcomes(similarity, matchable, correct, n_profiled)


def _metrics_at(outcomes: _Outcomes, threshold: float) -> dict[str, Any]:
    assigned = outcomes.matchable.copy()
    assigned[assigned] = outcomes.similarity[assigned] >= threshold
    n_queries = int(assigned.size)
    n_assigned = int(assigned.sum())
    n_correct = int((assigned & outcomes.correct_if_assigned).sum())
    n_wrong = n_assigned - n_correct
    fmr = n_wrong / n_assigned if n_assigned else 0.0
    return {
        "n_queries": n_queries,
        "n_assigned": n_assigned,
        "n_correct": n_correct,
        "n_wrong": n_wrong,
        "n_profiled_queries": outcomes.n_profiled_queries,
        "assignment_rate": n_assigned / n_queries if n_queries else 0.0,
        "false_match_rate": fmr,
        "precision": 1.0 - fmr,
        "recall": n_correct / outcomes.n_profiled_queries if outcomes.n_profiled_queries else 0.0,
    }


def check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(f"threshold must be finite; got {threshold}")
    return value


def assignment_metrics(
    best_name: Sequence[str | None],
    best_similarity: Sequence[float],
    true_identity: Sequence[str],
    threshold: float,
    profiled: set[str],
) -> dict[str, Any]:
    """Counts and rates of assigning each query to its best profile when similarity >= threshold.

    ``profiled`` is the set of identities that have a profile (used for recall); the keys are
    :data:`ASSIGNMENT_KEYS`.
    """
    outcomes = _outcomes(best_name, best_similarity, true_identity, profiled)
    return _metrics_at(outcomes, check_threshold(threshold))


def threshold_sweep(
    best_name: Sequence[str | None],
    best_similarity: Sequence[float],
    true_identity: Sequence[str],
    profiled: set[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """One row per threshold: 'threshold' plus the columns of :func:`assignment_metrics`."""
    outcomes = _outcomes(best_name, best_similarity, true_identity, profiled)
    rows = [{"threshold": t, **_metrics_at(outcomes, t)} for t in map(check_threshold, thresholds)]
    return pd.DataFrame(rows, columns=["threshold", *ASSIGNMENT_KEYS])


def best_threshold(sweep: pd.DataFrame, max_false_match_rate: float = 0.05) -> dict[str, Any] | None:
    """The sweep row (as a plain dict) with the highest assignment rate among rows that assign at
    least one query with ``false_match_rate <= max_false_match_rate``; ties -> higher threshold.

    Rows assigning nothing do not qualify (their FMR of 0 is vacuous), so None means no threshold
    assigns anything within the FMR budget.
    """
    qualifying = sweep[
        (sweep["n_assigned"] > 0) & (sweep["false_match_rate"] <= max_false_match_rate + 1e-12)
    ]
    if qualifying.empty:
        return None
    best = qualifying.sort_values(["assignment_rate", "threshold"], ascending=False).iloc[0]
    return {key: json_safe(value) for key, value in best.items()}


# --------------------------------------------------------------------------- retrieval and distributions


def retrieval_metrics(
    query_emb: np.ndarray,
    query_ids: Sequence[str],
    gallery_emb: np.ndarray,
    gallery_ids: Sequence[str],
    *,
    max_queries: int | None = None,
) -> dict[str, Any]:
    """Rank-1 and mAP of queries (whose identity is in the gallery) against gallery detections.

    Ranking is by cosine similarity, descending; equal similarities keep gallery order.

    Every query is ranked against every gallery detection, so the cost is queries x gallery: with
    ``max_queries``, a seeded sample of that many eligible queries is ranked instead (the same
    sample for the same inputs; ``sampled_from`` then says how many were eligible), which keeps
    the cost linear in the gallery.
    """
    queries = normalise_rows(embedding_matrix(query_emb, "query_emb"), "query_emb")
    gallery = normalise_rows(embedding_matrix(gallery_emb, "gallery_emb"), "gallery_emb")
    q_labels = np.asarray(identity_labels(query_ids, "query_ids"), dtype=object)
    g_labels = np.asarray(identity_labels(gallery_ids, "gallery_ids"), dtype=object)
    check_length(q_labels, queries.shape[0], "query_ids", "query_emb")
    check_length(g_labels, gallery.shape[0], "gallery_ids", "gallery_emb")

    codes: dict[str, int] = {}  # identity -> integer code: comparisons below are on integers, not strings
    g_codes = np.array([codes.setdefault(label, len(codes)) for label in g_labels], dtype=np.int64)
    q_codes = np.array([codes.get(label, -1) for label in q_labels], dtype=np.int64)
    keep = np.flatnonzero(q_codes >= 0)
    if keep.size == 0:
        return {"rank1": 0.0, "mAP": 0.0, "n_queries": 0}
    check_dims(queries, gallery, "query_emb", "gallery_emb")
    eligible = int(keep.size)
    if max_queries is not None and eligible > max_queries:
        keep = np.sort(np.random.default_rng(0).choice(keep, size=max_queries, replace=False))

    hits_at_1 = 0
    ap_total = 0.0
    for start in range(0, keep.size, _RANK_BLOCK):
        block = keep[start : start + _RANK_BLOCK]
        negated = -(queries[block] @ gallery.T)  # ascending order of this = descending similarity
        ordered = np.sort(negated, axis=1)
        for row, q in enumerate(block):
            ranks = _ranks_of_relevant(negated[row], ordered[row], np.flatnonzero(g_codes == q_codes[q]))
            hits_at_1 += int(ranks[0] == 1)
            ap_total += float(np.mean(np.arange(1, ranks.size + 1) / ranks))
    result = {"rank1": hits_at_1 / keep.size, "mAP": ap_total / keep.size, "n_queries": int(keep.size)}
    if keep.size < eligible:
        result["sampled_from"] = eligible
    return result


def _ranks_of_relevant(negated: np.ndarray, ordered: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based ranks (ascending) of the ``relevant`` gallery items in the stable ascending order of
    ``negated`` (``ordered`` is that row sorted): the items before one are those with a smaller
    value, and those with an equal value earlier in the gallery (ties keep gallery order). Only the
    relevant items are located, by binary search, instead of ordering the whole gallery by index."""
    values = negated[relevant]
    before = np.searchsorted(ordered, values, side="left")
    tied = np.searchsorted(ordered, values, side="right") - before > 1
    for k in np.flatnonzero(tied):
        before[k] += np.count_nonzero(negated[: relevant[k]] == values[k])
    return np.sort(before + 1)


def similarity_distributions(
    query_emb: np.ndarray, query_ids: Sequence[str], profiles: Profiles, *, max_different: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(same, different) cosine similarities, ignoring the sex rule.

    same: each query against its own deer's profile (queries with a profile only); different: each
    query against every other profile (open-set queries contribute all their profiles), in
    query-major order. There are queries x profiles different pairs: with ``max_different``, only
    every k-th of them (k the smallest stride that keeps at most that many) is kept. Computed
    :data:`_QUERY_BLOCK` queries at a time.
    """
    queries = normalise_rows(embedding_matrix(query_emb, "query_emb"), "query_emb")
    labels = np.asarray(identity_labels(query_ids, "query_ids"), dtype=object)
    check_length(labels, queries.shape[0], "query_ids", "query_emb")
    if queries.shape[0] == 0 or not profiles.names:
        return np.empty(0), np.empty(0)
    check_dims(queries, profiles.vectors, "query_emb", "profiles.vectors")
    names = np.asarray(profiles.names, dtype=object)
    profiled = set(profiles.names)
    n_different = queries.shape[0] * len(names) - sum(label in profiled for label in labels)
    stride = 1 if max_different is None else max(1, -(-n_different // max(max_different, 1)))
    same, different, seen = [], [], 0
    for start in range(0, queries.shape[0], _QUERY_BLOCK):
        rows = slice(start, start + _QUERY_BLOCK)
        similarities = (queries[rows] @ profiles.vectors.T).astype(np.float64)
        own = labels[rows, None] == names[None, :]
        same.append(similarities[own])
        others = similarities[~own]
        different.append(others[(seen + np.arange(others.size)) % stride == 0] if stride > 1 else others)
        seen += others.size
    return np.concatenate(same), np.concatenate(different)


# --------------------------------------------------------------------------- report


def json_safe(value: Any) -> Any:
    """numpy scalar -> Python scalar; NaN -> None (for strict JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
