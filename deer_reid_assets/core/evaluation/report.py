"""The evaluation report of one configuration on one query set, and the before/after comparison."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from deer_reid_assets.core.classes import sex_of
from deer_reid_assets.core.evaluation.profiles import Matches, Profiles, build_profiles, check_blocks, match_to_profiles
from deer_reid_assets.core.evaluation.scores import (
    assignment_metrics,
    best_threshold,
    check_threshold,
    json_safe,
    retrieval_metrics,
    similarity_distributions,
    threshold_sweep,
)
from deer_reid_assets.core.evaluation.splits import QUERY_SETS, EvalSplit
from deer_reid_assets.core.vectors import check_length, embedding_matrix, identity_labels

MAX_RETRIEVAL_QUERIES = 2000
"""Rank-1 / mAP rank each query against every gallery detection (queries x gallery): past this many
queries a seeded sample of them is ranked (binomial standard error of rank-1 <= 0.011), so the
evaluation's cost grows linearly with the number of detections. The summary's n_retrieval_queries
says how many were ranked."""
MAX_DIFFERENT_PAIRS = 1_000_000
"""Different-deer similarities kept for the histogram (every k-th pair past this many)."""


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate` measured for one model on one query set."""

    threshold: float
    assignment: dict[str, Any]  # assignment_metrics at `threshold`
    best: dict[str, Any] | None  # best_threshold row, None if no threshold qualifies
    retrieval: dict[str, Any]  # retrieval_metrics
    sweep: pd.DataFrame  # threshold_sweep
    same_similarities: np.ndarray
    different_similarities: np.ndarray
    mean_true_match_similarity: float  # mean of same_similarities (nan if none)
    query_set: str = "test"
    max_false_match_rate: float = 0.05
    n_profiles: int = 0
    split_sizes: dict[str, int] = field(default_factory=dict)  # EvalSplit.sizes()
    per_query: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per query detection
    # buck queries assigned / of those assigned to another buck's profile, and the rate (None: none assigned)
    buck_misidentification: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-serialisable headline numbers (NaN becomes None)."""
        best = self.best or {}
        values: dict[str, Any] = {
            "query_set": self.query_set,
            "threshold": self.threshold,
            **self.assignment,
            "rank1": self.retrieval["rank1"],
            "mAP": self.retrieval["mAP"],
            "n_retrieval_queries": self.retrieval["n_queries"],
            "max_false_match_rate": self.max_false_match_rate,
            "best_threshold": best.get("threshold"),
            "best_assignment_rate": best.get("assignment_rate"),
            "best_false_match_rate": best.get("false_match_rate"),
            "best_recall": best.get("recall"),
            "mean_true_match_similarity": self.mean_true_match_similarity,
            "n_profiles": self.n_profiles,
            **self.split_sizes,
        }
        return {key: json_safe(value) for key, value in values.items()}

    def to_json(self) -> str:
        """Summary, sweep rows, split sizes and buck misidentification as strict JSON."""
        sweep_rows = [
            {key: json_safe(value) for key, value in row.items()}
            for row in self.sweep.to_dict(orient="records")
        ]
        payload = {"summary": self.summary(), "sweep": sweep_rows, "split": dict(self.split_sizes),
                   "buck_misidentification": {k: json_safe(v) for k, v in self.buck_misidentification.items()}}
        return json.dumps(payload, allow_nan=False)

    def markdown_table(self) -> str:
        """Two-column Markdown table of :meth:`summary`."""
        lines = ["| Metric | Value |", "| --- | --- |"]
        for key, value in self.summary().items():
            if value is None:
                text = "n/a"
            elif isinstance(value, float):
                text = f"{value:.3f}"
            else:
                text = str(value)
            lines.append(f"| {key} | {text} |")
        return "\n".join(lines)


def evaluate(
    embeddings: np.ndarray,
    detection_ids: Sequence[str],
    identities: Sequence[str],
    classifications: Sequence[str | None] | None,
    split: EvalSplit,
    *,
    threshold: float = 0.40,
    query_set: str = "test",
    max_false_match_rate: float = 0.05,
    blocks: Sequence[tuple[int, int, float]] | None = None,
    veto: Callable[[list[str], list[str], list[str], list[str]], np.ndarray] | None = None,
) -> EvaluationReport:
    """Evaluate one embedding model: profiles from the split's gallery, queries from its val or
    test set (``query_set``), assignment metrics at ``threshold`` with the sex rule (when
    ``classifications`` are given), the threshold sweep and best threshold, retrieval against the
    gallery detections, and the same/different-deer similarity distributions.

    ``blocks`` (optional, see :func:`build_profiles`) builds block-wise (ensemble) profiles; the
    embeddings should then be rows like :func:`core.ensemble.ensemble_vectors` produces.

    ``veto(query ids, profile names, gallery ids, gallery identities)`` (optional) returns a
    queries x profiles boolean matrix of pairs a hard constraint rules out (the antler constraint)."""
    matrix = embedding_matrix(embeddings, "embeddings")
    ids, labels, classes, threshold = check_inputs(detection_ids, identities, classifications, split, query_set,
                                                   threshold, matrix.shape[0])
    if blocks is not None:
        blocks = check_blocks(blocks, matrix.shape[1])

    gallery = split.gallery
    queries = split.val_query if query_set == "val" else split.test_query
    profiles = build_profiles(
        matrix[gallery], labels[gallery], None if classes is None else classes[gallery], blocks
    )
    query_classes = None if classes is None else classes[queries]
    excluded = None if veto is None else veto(list(ids[queries]), list(profiles.names), list(ids[gallery]),
                                              list(labels[gallery]))
    matches = match_to_profiles(matrix[queries], profiles, query_classes, excluded)
    truth = labels[queries]
    same, different = similarity_distributions(matrix[queries], truth, profiles, max_different=MAX_DIFFERENT_PAIRS)
    retrieval = retrieval_metrics(matrix[queries], truth, matrix[gallery], labels[gallery],
                                  max_queries=MAX_RETRIEVAL_QUERIES)
    return assemble_report(threshold, query_set, max_false_match_rate, split, profiles, ids[queries], truth,
                           query_classes, matches, same, different, retrieval)


def check_inputs(detection_ids: Sequence[str], identities: Sequence[str], classifications: Sequence[str | None] | None,
                 split: EvalSplit, query_set: str, threshold: float, n: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """(ids, identities, classes or None, threshold) of ``n`` embeddings, checked: ValueError naming
    the input that does not fit."""
    ids = np.asarray(identity_labels(detection_ids, "detection_ids"), dtype=object)
    labels = np.asarray(identity_labels(identities, "identities"), dtype=object)
    check_length(ids, n, "detection_ids", "embeddings")
    check_length(labels, n, "identities", "embeddings")
    classes = None
    if classifications is not None:
        check_length(classifications, n, "classifications", "embeddings")
        classes = np.asarray(list(classifications), dtype=object)
    if query_set not in QUERY_SETS:
        raise ValueError(f"query_set must be one of {QUERY_SETS}; got {query_set!r}")
    threshold = check_threshold(threshold)
    for role in ("gallery", "val_query", "test_query"):
        idx = getattr(split, role)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split.{role} has indices outside the {n} embeddings")
    return ids, labels, classes, threshold


def assemble_report(threshold: float, query_set: str, max_false_match_rate: float, split: EvalSplit,
                    profiles: Profiles, query_ids: np.ndarray, truth: np.ndarray, query_classes: np.ndarray | None,
                    matches: Matches, same: np.ndarray, different: np.ndarray, retrieval: dict[str, Any]
                    ) -> EvaluationReport:
    """The report from what was measured per query (best profile and similarity), the similarity
    distributions and rank-1 / mAP: the part the in-memory and the streamed evaluation share."""
    profiled = set(profiles.names)
    assignment = assignment_metrics(matches.best_name, matches.best_similarity, truth, threshold, profiled)
    sweep = threshold_sweep(matches.best_name, matches.best_similarity, truth, profiled)
    assigned = ~np.isnan(matches.best_similarity)
    assigned[assigned] = matches.best_similarity[assigned] >= threshold
    per_query = pd.DataFrame(
        {
            "detection_id": query_ids,
            "true_identity": truth,
            "best_name": matches.best_name,
            "best_similarity": matches.best_similarity,
            "assigned": assigned,
            "correct": assigned & (matches.best_name == truth),
        }
    )
    return EvaluationReport(
        threshold=threshold,
        assignment=assignment,
        best=best_threshold(sweep, max_false_match_rate),
        retrieval=retrieval,
        sweep=sweep,
        same_similarities=same,
        different_similarities=different,
        mean_true_match_similarity=float(same.mean()) if same.size else float("nan"),
        query_set=query_set,
        max_false_match_rate=max_false_match_rate,
        n_profiles=len(profiles.names),
        split_sizes=split.sizes(),
        per_query=per_query,
        buck_misidentification=_buck_misidentification(per_query, query_classes, profiles),
    )


def _buck_misidentification(per_query: pd.DataFrame, query_classes, profiles) -> dict[str, Any]:
    """Buck queries (by detection class) assigned, and of those, assigned to another buck's profile."""
    if query_classes is None or per_query.empty:
        return {"n_bucks_assigned": 0, "n_misidentified": 0, "rate": None}
    sex_of_profile = dict(zip(profiles.names, profiles.sexes))
    buck = np.array([sex_of(c) == "buck" for c in query_classes], dtype=bool)
    assigned = buck & per_query["assigned"].to_numpy(dtype=bool)
    wrong = assigned & ~per_query["correct"].to_numpy(dtype=bool) & np.array(
        [sex_of_profile.get(n) == "buck" for n in per_query["best_name"]], dtype=bool)
    n, m = int(assigned.sum()), int(wrong.sum())
    return {"n_bucks_assigned": n, "n_misidentified": m, "rate": m / n if n else None}


def _nan_if_none(value) -> float:
    return math.nan if value is None else float(value)


def compare_reports(reports: dict[str, EvaluationReport], baseline: str) -> pd.DataFrame:
    """One row per model (in dict order) with its headline numbers and the % change of its mean
    true-match similarity relative to ``baseline`` (nan when the baseline mean is 0 or nan)."""
    if baseline not in reports:
        raise ValueError(f"baseline {baseline!r} is not one of the reports {list(reports)}")
    base = reports[baseline].mean_true_match_similarity
    rows = []
    for model, report in reports.items():
        best = report.best or {}
        mean = report.mean_true_match_similarity
        change = (mean - base) / abs(base) * 100.0 if base and not math.isnan(base) else math.nan
        rows.append(
            {
                "model": model,
                "threshold": report.threshold,
                "assignment_rate": report.assignment["assignment_rate"],
                "false_match_rate": report.assignment["false_match_rate"],
                "buck_misid_rate": _nan_if_none(report.buck_misidentification.get("rate")),
                "rank1": report.retrieval["rank1"],
                "mAP": report.retrieval["mAP"],
                "best_threshold": best.get("threshold", math.nan),
                "best_assignment_rate": best.get("assignment_rate", math.nan),
                "mean_true_match_similarity": mean,
                "mean_true_match_similarity_change_pct": change,
            }
        )
    return pd.DataFrame(rows)
