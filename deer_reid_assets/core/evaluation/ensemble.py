"""Two-model ensemble: weighted cosine of model A and model B, and a search for the weight.

Pure numpy/pandas; no Dagster, torch or database.

The ensemble similarity between a query and a deer is ``w * cos_A + (1 - w) * cos_B``, where each
model has its own profile (L2-normalised mean of that model's gallery vectors). With unit rows
``a`` (model A) and ``b`` (model B), the detection vector ``concat(sqrt(w) * a, sqrt(1 - w) * b)``
is unit norm, and so is the block-wise profile ``concat(sqrt(w) * P_A, sqrt(1 - w) * P_B)`` that
:func:`profiles.build_profiles` builds with the blocks :func:`ensemble_vectors` returns; their dot
product is exactly the ensemble similarity. Detection-to-detection cosines of the concatenated
vectors (rank-1 / mAP) are exactly the weighted sums of the per-model cosines too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from deer_reid_assets.core.evaluation.report import EvaluationReport, evaluate
from deer_reid_assets.core.evaluation.scores import json_safe
from deer_reid_assets.core.evaluation.splits import QUERY_SETS, EvalSplit
from deer_reid_assets.core.evaluation.streamed import Rows, evaluate_streamed
from deer_reid_assets.core.vectors import UNIT_NORM_TOLERANCE, unit_norm_rows

ROADMAP_WEIGHT = 0.6  # the roadmap's starting point: 0.6 * ResNet50 + 0.4 * EfficientNet-B0
DEFAULT_WEIGHTS = np.round(np.arange(0.0, 1.0001, 0.05), 2)
CURVE_COLUMNS = ("weight", "best_threshold", "assignment_rate", "false_match_rate", "rank1", "mAP")
_TIE = 1e-9  # weights closer than this to equally far from ROADMAP_WEIGHT count as equally far


def _check_weight(weight: Any) -> float:
    if isinstance(weight, (bool, np.bool_)):
        raise ValueError(f"weight must be a number in [0, 1]; got {weight!r}")
    try:
        value = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"weight must be a number in [0, 1]; got {weight!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"weight must be in [0, 1]; got {weight!r}")
    return value


def ensemble_vectors(
    a: np.ndarray, b: np.ndarray, weight: float, *, atol: float = UNIT_NORM_TOLERANCE
) -> tuple[np.ndarray, list[tuple[int, int, float]]]:
    """Rows ``concat(sqrt(w) * a, sqrt(1 - w) * b)`` and blocks ``[(0, Da, w), (Da, Da + Db, 1 - w)]``.

    ``a`` (N, Da) and ``b`` (N, Db) must hold the same detections in the same order, with rows of
    unit norm within ``atol`` (they are re-normalised exactly, so the result rows are unit norm).
    Returns float64. Pass the blocks to :func:`report.evaluate` / :func:`profiles.build_profiles`.
    Raises ValueError on bad shapes, non-unit or non-finite rows, or ``weight`` outside [0, 1].
    """
    w = _check_weight(weight)
    left = unit_norm_rows(a, "a", atol)
    right = unit_norm_rows(b, "b", atol)
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"a has {left.shape[0]} rows but b has {right.shape[0]}")
    da, db = left.shape[1], right.shape[1]
    vectors = np.concatenate([math.sqrt(w) * left, math.sqrt(1.0 - w) * right], axis=1)
    return vectors, [(0, da, w), (da, da + db, 1.0 - w)]


@dataclass
class EnsembleChoice:
    """Result of :func:`search_weights`.

    ``weight``/``threshold`` are the chosen operating point (A gets ``weight``, B ``1 - weight``);
    ``assignment_rate``/``false_match_rate`` are measured there on the search's query set. When
    ``meets_budget`` is False no (w, t) assigns anything within the FMR budget: ``threshold`` is
    None (the caller keeps its own operating threshold), the weight is the one with the highest
    mAP, and the two rates are NaN (None in JSON).
    """

    weight: float
    threshold: float | None
    assignment_rate: float
    false_match_rate: float
    meets_budget: bool
    roadmap: dict[str, Any]  # same metrics at w = ROADMAP_WEIGHT (threshold None if none qualifies)
    curve: pd.DataFrame  # one row per searched weight, columns CURVE_COLUMNS
    max_false_match_rate: float = 0.05
    query_set: str = "val"

    def to_json(self) -> dict[str, Any]:
        """Plain, strict-JSON-able dict (NaN -> None); the curve as a list of row dicts."""
        return {
            "weight": json_safe(self.weight),
            "threshold": json_safe(self.threshold),
            "assignment_rate": json_safe(self.assignment_rate),
            "false_match_rate": json_safe(self.false_match_rate),
            "meets_budget": bool(self.meets_budget),
            "max_false_match_rate": json_safe(self.max_false_match_rate),
            "query_set": self.query_set,
            "roadmap": {key: json_safe(value) for key, value in self.roadmap.items()},
            "curve": [
                {key: json_safe(value) for key, value in row.items()}
                for row in self.curve.to_dict(orient="records")
            ],
        }


def _curve_row(weight: float, report: EvaluationReport) -> dict[str, Any]:
    best = report.best
    return {
        "weight": weight,
        "best_threshold": math.nan if best is None else float(best["threshold"]),
        "assignment_rate": math.nan if best is None else float(best["assignment_rate"]),
        "false_match_rate": math.nan if best is None else float(best["false_match_rate"]),
        "rank1": float(report.retrieval["rank1"]),
        "mAP": float(report.retrieval["mAP"]),
    }


def _roadmap_distance(weight: float) -> float:
    return round(abs(weight - ROADMAP_WEIGHT) / _TIE) * _TIE


def _choose(rows: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The chosen curve row and whether it meets the budget (see :func:`search_weights`)."""
    if not rows:
        raise ValueError("no curve rows to choose from")
    qualifying = [row for row in rows if not math.isnan(row["best_threshold"])]
    meets_budget = bool(qualifying)
    primary = "assignment_rate" if meets_budget else "mAP"
    pool = qualifying if meets_budget else list(rows)
    chosen = min(
        pool,
        key=lambda row: (-row[primary], -row["rank1"], _roadmap_distance(row["weight"]), -row["weight"]),
    )
    return chosen, meets_budget


def _check_weights(weights: Sequence[float]) -> list[float]:
    values = sorted({_check_weight(w) for w in np.asarray(weights, dtype=object).ravel()})
    if not values:
        raise ValueError("weights must contain at least one value in [0, 1]")
    return values


def _check_search(weights: Sequence[float], max_false_match_rate: float, query_set: str) -> list[float]:
    grid = _check_weights(weights)
    if not (math.isfinite(float(max_false_match_rate)) and 0.0 <= float(max_false_match_rate) <= 1.0):
        raise ValueError(f"max_false_match_rate must be in [0, 1]; got {max_false_match_rate!r}")
    if query_set not in QUERY_SETS:
        raise ValueError(f"query_set must be one of {QUERY_SETS}; got {query_set!r}")
    return grid


def search_weights(
    a: np.ndarray,
    b: np.ndarray,
    detection_ids: Sequence[str],
    identities: Sequence[str],
    classifications: Sequence[str | None] | None,
    split: EvalSplit,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    max_false_match_rate: float = 0.05,
    query_set: str = "val",
) -> EnsembleChoice:
    """Grid-search the ensemble weight ``w`` (A gets ``w``, B ``1 - w``) on ``query_set`` queries.

    For each weight (deduplicated, ascending) the ensemble vectors are evaluated with
    :func:`report.evaluate` (block-wise profiles, sex rule when ``classifications`` are given) and
    its ``best`` threshold (highest assignment rate with FMR <= ``max_false_match_rate`` and at
    least one assignment) is taken. The chosen (w, t) maximises that assignment rate; ties go to
    the higher rank-1, then to the weight closest to :data:`ROADMAP_WEIGHT` (then the higher weight).

    Fallback: when no weight has a qualifying threshold, ``meets_budget`` is False, the weight is
    the one with the highest mAP (ties: higher rank-1, then closest to the roadmap weight, then
    higher), ``threshold`` is None (the caller keeps its operating threshold) and the rates are NaN.

    ``roadmap`` holds the same numbers at w = :data:`ROADMAP_WEIGHT` (evaluated even when it is not
    in ``weights``): weight, threshold (None when nothing qualifies), assignment_rate and
    false_match_rate at that threshold (None then), meets_budget, rank1, mAP.
    """
    grid = _check_search(weights, max_false_match_rate, query_set)
    left = unit_norm_rows(a, "a", UNIT_NORM_TOLERANCE)
    right = unit_norm_rows(b, "b", UNIT_NORM_TOLERANCE)
    if left.shape[0] != right.shape[0]:
        raise ValueError(f"a has {left.shape[0]} rows but b has {right.shape[0]}")

    def run(weight: float) -> EvaluationReport:
        vectors, blocks = ensemble_vectors(left, right, weight)
        return evaluate(
            vectors, detection_ids, identities, classifications, split,
            query_set=query_set, max_false_match_rate=max_false_match_rate, blocks=blocks,
        )

    return _search(grid, run, max_false_match_rate, query_set)


def search_weights_streamed(
    rows_at: Callable[[float], Rows],
    dims: tuple[int, int],
    detection_ids: Sequence[str],
    identities: Sequence[str],
    classifications: Sequence[str | None] | None,
    split: EvalSplit,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    max_false_match_rate: float = 0.05,
    query_set: str = "val",
) -> EnsembleChoice:
    """:func:`search_weights` with each weight's ensemble rows read a chunk at a time:
    ``rows_at(w)`` is a source (see :mod:`core.evaluation.streamed`) of the rows
    :func:`ensemble_vectors` makes at weight ``w``; ``dims`` are the two models' dimensions."""
    grid = _check_search(weights, max_false_match_rate, query_set)

    def run(weight: float) -> EvaluationReport:
        blocks = [(0, dims[0], weight), (dims[0], dims[0] + dims[1], 1.0 - weight)]
        return evaluate_streamed(rows_at(weight), detection_ids, identities, classifications, split,
                                 query_set=query_set, max_false_match_rate=max_false_match_rate, blocks=blocks)

    return _search(grid, run, max_false_match_rate, query_set)


def _search(grid: list[float], run: Callable[[float], EvaluationReport], max_false_match_rate: float,
            query_set: str) -> EnsembleChoice:
    rows = [_curve_row(w, run(w)) for w in grid]
    curve = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))

    chosen, meets_budget = _choose(rows)

    roadmap_row = next((row for row in rows if row["weight"] == ROADMAP_WEIGHT), None)
    if roadmap_row is None:
        roadmap_row = _curve_row(ROADMAP_WEIGHT, run(ROADMAP_WEIGHT))
    roadmap_ok = not math.isnan(roadmap_row["best_threshold"])
    roadmap = {
        "weight": ROADMAP_WEIGHT,
        "threshold": roadmap_row["best_threshold"] if roadmap_ok else None,
        "assignment_rate": roadmap_row["assignment_rate"] if roadmap_ok else None,
        "false_match_rate": roadmap_row["false_match_rate"] if roadmap_ok else None,
        "meets_budget": roadmap_ok,
        "rank1": roadmap_row["rank1"],
        "mAP": roadmap_row["mAP"],
    }
    return EnsembleChoice(
        weight=float(chosen["weight"]),
        threshold=float(chosen["best_threshold"]) if meets_budget else None,
        assignment_rate=float(chosen["assignment_rate"]) if meets_budget else math.nan,
        false_match_rate=float(chosen["false_match_rate"]) if meets_budget else math.nan,
        meets_budget=meets_budget,
        roadmap=roadmap,
        curve=curve,
        max_false_match_rate=float(max_false_match_rate),
        query_set=query_set,
    )
