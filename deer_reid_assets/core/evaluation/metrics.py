"""Evaluation of deer re-identification: splits, profiles, matching and metrics.

Pure numpy/pandas; no Dagster, torch or database. Project-wide definitions:

* A *profile* is the L2-normalised mean of the (row-normalised) embeddings of one deer's gallery
  detections. A query is *assigned* to its most similar sex-compatible profile (cosine) when that
  similarity is ``>= threshold``; a query with no compatible profile is unassigned.
* assignment rate = assigned / queries; false-match rate (FMR) = wrong / assigned (0 when nothing
  is assigned); precision = 1 - FMR; recall = correct / queries whose true deer has a profile
  (0 when there are none). Every assignment of an open-set query (a deer with no profile) is wrong.
* rank-1 / mAP: each query whose identity occurs in the gallery is ranked against the gallery
  *detections* by cosine similarity; ties keep gallery order (stable sort). AP = mean of
  precision@k over the true-match positions. With no such query both are 0 and ``n_queries`` is 0.
* Block-wise profiles (model ensembles): with ``blocks = [(start, stop, weight), ...]`` tiling the
  embedding columns (weights summing to 1), a profile is built per block (mean of that block's
  columns over the deer's rows, L2-normalised), scaled by ``sqrt(weight)`` and concatenated. For
  rows ``concat(sqrt(w_k) * x_k)`` with unit ``x_k`` (see :mod:`core.ensemble`), profile . query is
  exactly ``sum_k w_k * cos(x_k, profile_k)`` and both are unit norm. A zero-weight block gets a
  zero profile block.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

ROLE_GALLERY = "gallery"
ROLE_VAL_QUERY = "val_query"
ROLE_TEST_QUERY = "test_query"
QUERY_SETS = ("val", "test")
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

_QUERY_BLOCK = 1024  # queries per similarity block in retrieval (bounds memory to block x gallery)


# --------------------------------------------------------------------------- validation helpers


def _embedding_matrix(values: Any, name: str) -> np.ndarray:
    """Return ``values`` as a finite 2-D float array with no zero rows, else raise ValueError."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim); got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return array


def _unit_rows(matrix: np.ndarray, name: str) -> np.ndarray:
    """L2-normalise rows, raising ValueError on a zero-norm row (cosine is undefined there)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(f"{name} has zero-norm rows (first: index {int(zero[0])})")
    return matrix / norms


def _check_length(values: Sequence[Any], expected: int, name: str, reference: str) -> None:
    if len(values) != expected:
        raise ValueError(f"{name} has length {len(values)} but {reference} has {expected}")


def _labels(values: Sequence[Any], name: str) -> list[str]:
    """Identity labels must be non-empty strings (unlabelled detections are filtered out upstream)."""
    labels = list(values)
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise ValueError(f"{name}[{i}] must be a non-empty string; got {label!r}")
    return labels


def _check_dims(query: np.ndarray, reference: np.ndarray, query_name: str, ref_name: str) -> None:
    if query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"{query_name} has dimension {query.shape[1]} but {ref_name} has {reference.shape[1]}"
        )


# --------------------------------------------------------------------------- split


@dataclass(frozen=True, eq=False)
class EvalSplit:
    """Seeded, identity-aware split of labelled detections (indices into the detection arrays)."""

    gallery: np.ndarray
    val_query: np.ndarray
    test_query: np.ndarray
    held_out_identities: tuple[str, ...]  # identities with no gallery item (open set)

    def sizes(self) -> dict[str, int]:
        """Counts per role plus the number of held-out identities."""
        return {
            "n_gallery": int(self.gallery.size),
            "n_val_query": int(self.val_query.size),
            "n_test_query": int(self.test_query.size),
            "n_held_out_identities": len(self.held_out_identities),
        }


def _unit_hash(seed: int, kind: str, key: str) -> float:
    """Deterministic uniform value in [0, 1) from (seed, kind, key) via BLAKE2b."""
    digest = hashlib.blake2b(f"{seed}\x1f{kind}\x1f{key}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def identity_split(
    detection_ids: Sequence[str],
    identities: Sequence[str],
    *,
    seed: int = 0,
    held_out_fraction: float = 0.2,
    gallery_fraction: float = 0.5,
) -> EvalSplit:
    """Split labelled detections into gallery / validation queries / test queries.

    Each identity is held out (open set) when ``hash(seed, identity) < held_out_fraction``; each
    detection gets ``u = hash(seed, detection_id)``. Held-out identities: ``u < 0.5`` -> val query,
    else test query. Kept identities: ``u < gallery_fraction`` -> gallery, else the rest of [0, 1)
    is halved into val / test. A kept identity with no gallery detection gets its lowest-``u``
    detection moved to the gallery (so single-detection identities are gallery-only).

    Adding detections never moves existing ones, with one exception: a detection that was *forced*
    into the gallery goes back to its query role when a new detection of the same identity with a
    lower ``u`` arrives (the identity still has a gallery item).
    """
    ids = _labels(detection_ids, "detection_ids")
    labels = _labels(identities, "identities")
    _check_length(labels, len(ids), "identities", "detection_ids")
    if len(set(ids)) != len(ids):
        raise ValueError("detection_ids must be unique")
    for name, value in (("held_out_fraction", held_out_fraction), ("gallery_fraction", gallery_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1]; got {value}")

    held_out = {
        identity
        for identity in set(labels)
        if _unit_hash(seed, "identity", identity) < held_out_fraction
    }
    u = np.array([_unit_hash(seed, "detection", d) for d in ids], dtype=np.float64)
    roles = np.empty(len(ids), dtype=object)
    val_cut = gallery_fraction + (1.0 - gallery_fraction) / 2.0
    by_identity: dict[str, list[int]] = {}
    for i, identity in enumerate(labels):
        by_identity.setdefault(identity, []).append(i)
        if identity in held_out:
            roles[i] = ROLE_VAL_QUERY if u[i] < 0.5 else ROLE_TEST_QUERY
        elif u[i] < gallery_fraction:
            roles[i] = ROLE_GALLERY
        else:
            roles[i] = ROLE_VAL_QUERY if u[i] < val_cut else ROLE_TEST_QUERY
    for identity, members in by_identity.items():
        if identity not in held_out and not any(roles[i] == ROLE_GALLERY for i in members):
            roles[min(members, key=lambda i: u[i])] = ROLE_GALLERY

    def indices(role: str) -> np.ndarray:
        return np.flatnonzero(roles == role).astype(np.intp)

    return EvalSplit(
        gallery=indices(ROLE_GALLERY),
        val_query=indices(ROLE_VAL_QUERY),
        test_query=indices(ROLE_TEST_QUERY),
        held_out_identities=tuple(sorted(held_out)),
    )


def split_roles(split: EvalSplit, n: int) -> np.ndarray:
    """Role ('gallery' / 'val_query' / 'test_query') per detection index ``0..n-1``.

    Raises ValueError unless the split partitions ``range(n)`` exactly.
    """
    roles = np.full(n, None, dtype=object)
    for role, idx in (
        (ROLE_GALLERY, split.gallery),
        (ROLE_VAL_QUERY, split.val_query),
        (ROLE_TEST_QUERY, split.test_query),
    ):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split has {role} indices outside range(n={n})")
        if np.any(roles[idx] != None):  # noqa: E711 - elementwise comparison on an object array
            raise ValueError(f"split assigns some {role} indices more than one role")
        roles[idx] = role
    if np.any(roles == None):  # noqa: E711
        raise ValueError(f"split does not cover every index of range(n={n})")
    return roles


# --------------------------------------------------------------------------- profiles and matching


def _normalise_sex(label: str | None) -> str:
    return "unknown" if label is None else str(label).strip().lower()


def sex_compatible(query_class: str | None, profile_sex: str | None) -> bool:
    """Sex rule (as in the SQL of ``core.matching``): a buck / doe query matches profiles of the
    same sex or 'unknown' (None) sex; any other query class (fawn, unknown, None) matches all."""
    query = _normalise_sex(query_class)
    if query not in ("buck", "doe"):
        return True
    return _normalise_sex(profile_sex) in (query, "unknown")


@dataclass
class Profiles:
    """One unit-norm vector per known deer; ``sexes`` are 'buck' / 'doe' / 'unknown'."""

    names: list[str]
    vectors: np.ndarray  # (P, D)
    sexes: list[str]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D; got shape {self.vectors.shape}")
        _check_length(self.names, self.vectors.shape[0], "names", "vectors")
        _check_length(self.sexes, self.vectors.shape[0], "sexes", "vectors")


def _profile_sex(classes: list[str]) -> str:
    """Strict majority of buck vs doe votes; fawn/unknown ignored; tie or no votes -> 'unknown'."""
    bucks, does = classes.count("buck"), classes.count("doe")
    if bucks > does:
        return "buck"
    if does > bucks:
        return "doe"
    return "unknown"


Block = tuple[int, int, float]
_BLOCK_WEIGHT_TOLERANCE = 1e-6


def check_blocks(blocks: Sequence[Sequence[Any]], dim: int) -> list[Block]:
    """Validate ``(start, stop, weight)`` column blocks for embeddings of dimension ``dim``.

    Blocks must be non-empty (``0 <= start < stop``), tile ``range(dim)`` exactly without gaps or
    overlap (any order; returned sorted by start), have finite weights in [0, 1] summing to 1
    (within 1e-6). Raises ValueError otherwise.
    """
    if isinstance(blocks, (str, bytes)):
        raise ValueError("blocks must be a sequence of (start, stop, weight) tuples")
    parsed: list[Block] = []
    for i, block in enumerate(blocks):
        try:
            start, stop, weight = block
        except (TypeError, ValueError):
            raise ValueError(f"blocks[{i}] must be a (start, stop, weight) tuple; got {block!r}") from None
        for name, value in (("start", start), ("stop", stop)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"blocks[{i}] {name} must be an integer; got {value!r}")
        numeric = isinstance(weight, (int, float, np.integer, np.floating))
        if isinstance(weight, (bool, np.bool_)) or not numeric:
            raise ValueError(f"blocks[{i}] weight must be a number; got {weight!r}")
        start, stop, weight = int(start), int(stop), float(weight)
        if not 0 <= start < stop:
            raise ValueError(f"blocks[{i}] must satisfy 0 <= start < stop; got ({start}, {stop})")
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"blocks[{i}] weight must be in [0, 1]; got {weight}")
        parsed.append((start, stop, weight))
    if not parsed:
        raise ValueError("blocks must contain at least one (start, stop, weight) block")
    parsed.sort(key=lambda block: block[0])
    position = 0
    for start, stop, _ in parsed:
        if start < position:
            raise ValueError(f"blocks overlap: block ({start}, {stop}) starts before column {position}")
        if start > position:
            raise ValueError(f"blocks leave columns {position}..{start - 1} uncovered")
        position = stop
    if position != dim:
        raise ValueError(f"blocks cover {position} columns but the embeddings have {dim}")
    total = math.fsum(weight for _, _, weight in parsed)
    if abs(total - 1.0) > _BLOCK_WEIGHT_TOLERANCE:
        raise ValueError(f"block weights must sum to 1; got {total}")
    return parsed


def build_profiles(
    embeddings: np.ndarray,
    identities: Sequence[str],
    sexes: Sequence[str | None] | None = None,
    blocks: Sequence[tuple[int, int, float]] | None = None,
) -> Profiles:
    """Profiles (sorted by name) from gallery embeddings; ``sexes`` are per-detection classes.

    With ``blocks`` (see :func:`check_blocks`), each profile is built block-wise: per block the
    mean of that block's columns over the deer's rows, L2-normalised, times ``sqrt(weight)``;
    zero-weight blocks stay zero. A zero mean in a positive-weight block raises ValueError.
    """
    matrix = _unit_rows(_embedding_matrix(embeddings, "embeddings"), "embeddings")
    checked = None if blocks is None else check_blocks(blocks, matrix.shape[1])
    labels = _labels(identities, "identities")
    _check_length(labels, matrix.shape[0], "identities", "embeddings")
    if sexes is not None:
        _check_length(sexes, matrix.shape[0], "sexes", "embeddings")
    classes = [_normalise_sex(s) for s in sexes] if sexes is not None else ["unknown"] * len(labels)

    names = sorted(set(labels))
    label_array = np.asarray(labels, dtype=object)
    vectors = np.zeros((len(names), matrix.shape[1]), dtype=matrix.dtype)
    profile_sexes = []
    for p, name in enumerate(names):
        members = np.flatnonzero(label_array == name)
        mean = matrix[members].mean(axis=0)
        if checked is None:
            norm = np.linalg.norm(mean)
            if norm == 0:
                raise ValueError(f"embeddings of identity {name!r} average to the zero vector")
            vectors[p] = mean / norm
        else:
            for start, stop, weight in checked:
                if weight == 0.0:
                    continue  # contributes nothing to any similarity; stays zero
                part = mean[start:stop]
                norm = np.linalg.norm(part)
                if norm == 0:
                    raise ValueError(
                        f"embeddings of identity {name!r} average to the zero vector in block "
                        f"({start}, {stop})"
                    )
                vectors[p, start:stop] = part * (math.sqrt(weight) / norm)
        profile_sexes.append(_profile_sex([classes[i] for i in members]))
    return Profiles(names=names, vectors=vectors, sexes=profile_sexes)


@dataclass
class Matches:
    """Top-1 compatible profile per query: name (None if none compatible) and cosine (nan if none)."""

    best_name: np.ndarray  # object
    best_similarity: np.ndarray  # float


def match_to_profiles(
    query_emb: np.ndarray,
    profiles: Profiles,
    query_classes: Sequence[str | None] | None = None,
) -> Matches:
    """Exact brute-force cosine top-1 under the sex rule; ties go to the earlier profile in
    ``profiles.names``. Without ``query_classes`` every query compares with every profile."""
    queries = _unit_rows(_embedding_matrix(query_emb, "query_emb"), "query_emb")
    n = queries.shape[0]
    if query_classes is not None:
        _check_length(query_classes, n, "query_classes", "query_emb")
    best_name = np.full(n, None, dtype=object)
    best_similarity = np.full(n, np.nan, dtype=np.float64)
    if n == 0 or not profiles.names:
        return Matches(best_name=best_name, best_similarity=best_similarity)
    _check_dims(queries, profiles.vectors, "query_emb", "profiles.vectors")

    similarities = (queries @ profiles.vectors.T).astype(np.float64)
    if query_classes is not None:
        allowed = np.array(
            [[sex_compatible(q, s) for s in profiles.sexes] for q in query_classes], dtype=bool
        )
        similarities = np.where(allowed, similarities, -np.inf)
    best = np.argmax(similarities, axis=1)  # first maximum -> earliest profile on ties
    top = similarities[np.arange(n), best]
    found = np.isfinite(top)
    names = np.asarray(profiles.names, dtype=object)
    best_name[found] = names[best[found]]
    best_similarity[found] = top[found]
    return Matches(best_name=best_name, best_similarity=best_similarity)


# --------------------------------------------------------------------------- assignment metrics


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
    _check_length(similarity, names.size, "best_similarity", "best_name")
    _check_length(truth, names.size, "true_identity", "best_name")
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


def _check_threshold(threshold: float) -> float:
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
    return _metrics_at(outcomes, _check_threshold(threshold))


def threshold_sweep(
    best_name: Sequence[str | None],
    best_similarity: Sequence[float],
    true_identity: Sequence[str],
    profiled: set[str],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """One row per threshold: 'threshold' plus the columns of :func:`assignment_metrics`."""
    outcomes = _outcomes(best_name, best_similarity, true_identity, profiled)
    rows = [{"threshold": t, **_metrics_at(outcomes, t)} for t in map(_check_threshold, thresholds)]
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
) -> dict[str, Any]:
    """Rank-1 and mAP of queries (whose identity is in the gallery) against gallery detections.

    Ranking is by cosine similarity, descending; equal similarities keep gallery order.
    """
    queries = _unit_rows(_embedding_matrix(query_emb, "query_emb"), "query_emb")
    gallery = _unit_rows(_embedding_matrix(gallery_emb, "gallery_emb"), "gallery_emb")
    q_labels = np.asarray(_labels(query_ids, "query_ids"), dtype=object)
    g_labels = np.asarray(_labels(gallery_ids, "gallery_ids"), dtype=object)
    _check_length(q_labels, queries.shape[0], "query_ids", "query_emb")
    _check_length(g_labels, gallery.shape[0], "gallery_ids", "gallery_emb")

    keep = np.flatnonzero(np.isin(q_labels, g_labels))
    if keep.size == 0:
        return {"rank1": 0.0, "mAP": 0.0, "n_queries": 0}
    _check_dims(queries, gallery, "query_emb", "gallery_emb")

    hits_at_1 = 0
    ap_total = 0.0
    ranks = np.arange(1, gallery.shape[0] + 1)
    for start in range(0, keep.size, _QUERY_BLOCK):
        block = keep[start : start + _QUERY_BLOCK]
        order = np.argsort(-(queries[block] @ gallery.T), axis=1, kind="stable")
        for row, q in zip(order, block):
            relevant = g_labels[row] == q_labels[q]
            hits_at_1 += int(relevant[0])
            ap_total += float(np.mean(np.cumsum(relevant)[relevant] / ranks[relevant]))
    return {"rank1": hits_at_1 / keep.size, "mAP": ap_total / keep.size, "n_queries": int(keep.size)}


def similarity_distributions(
    query_emb: np.ndarray, query_ids: Sequence[str], profiles: Profiles
) -> tuple[np.ndarray, np.ndarray]:
    """(same, different) cosine similarities, ignoring the sex rule.

    same: each query against its own deer's profile (queries with a profile only); different: each
    query against every other profile (open-set queries contribute all their profiles).
    """
    queries = _unit_rows(_embedding_matrix(query_emb, "query_emb"), "query_emb")
    labels = np.asarray(_labels(query_ids, "query_ids"), dtype=object)
    _check_length(labels, queries.shape[0], "query_ids", "query_emb")
    if queries.shape[0] == 0 or not profiles.names:
        return np.empty(0), np.empty(0)
    _check_dims(queries, profiles.vectors, "query_emb", "profiles.vectors")
    similarities = (queries @ profiles.vectors.T).astype(np.float64)
    own = labels[:, None] == np.asarray(profiles.names, dtype=object)[None, :]
    return similarities[own], similarities[~own]


# --------------------------------------------------------------------------- report


def json_safe(value: Any) -> Any:
    """numpy scalar -> Python scalar; NaN -> None (for strict JSON)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
        """Summary, sweep rows and split sizes as strict JSON."""
        sweep_rows = [
            {key: json_safe(value) for key, value in row.items()}
            for row in self.sweep.to_dict(orient="records")
        ]
        payload = {"summary": self.summary(), "sweep": sweep_rows, "split": dict(self.split_sizes)}
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
) -> EvaluationReport:
    """Evaluate one embedding model: profiles from the split's gallery, queries from its val or
    test set (``query_set``), assignment metrics at ``threshold`` with the sex rule (when
    ``classifications`` are given), the threshold sweep and best threshold, retrieval against the
    gallery detections, and the same/different-deer similarity distributions.

    ``blocks`` (optional, see :func:`build_profiles`) builds block-wise (ensemble) profiles; the
    embeddings should then be rows like :func:`core.ensemble.ensemble_vectors` produces."""
    matrix = _embedding_matrix(embeddings, "embeddings")
    n = matrix.shape[0]
    ids = np.asarray(_labels(detection_ids, "detection_ids"), dtype=object)
    labels = np.asarray(_labels(identities, "identities"), dtype=object)
    _check_length(ids, n, "detection_ids", "embeddings")
    _check_length(labels, n, "identities", "embeddings")
    classes = None
    if classifications is not None:
        _check_length(classifications, n, "classifications", "embeddings")
        classes = np.asarray(list(classifications), dtype=object)
    if query_set not in QUERY_SETS:
        raise ValueError(f"query_set must be one of {QUERY_SETS}; got {query_set!r}")
    threshold = _check_threshold(threshold)
    if blocks is not None:
        blocks = check_blocks(blocks, matrix.shape[1])
    for role in ("gallery", "val_query", "test_query"):
        idx = getattr(split, role)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"split.{role} has indices outside the {n} embeddings")

    gallery = split.gallery
    queries = split.val_query if query_set == "val" else split.test_query
    profiles = build_profiles(
        matrix[gallery], labels[gallery], None if classes is None else classes[gallery], blocks
    )
    query_classes = None if classes is None else classes[queries]
    matches = match_to_profiles(matrix[queries], profiles, query_classes)
    truth = labels[queries]
    profiled = set(profiles.names)

    assignment = assignment_metrics(
        matches.best_name, matches.best_similarity, truth, threshold, profiled
    )
    sweep = threshold_sweep(matches.best_name, matches.best_similarity, truth, profiled)
    same, different = similarity_distributions(matrix[queries], truth, profiles)
    assigned = ~np.isnan(matches.best_similarity)
    assigned[assigned] = matches.best_similarity[assigned] >= threshold
    per_query = pd.DataFrame(
        {
            "detection_id": ids[queries],
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
        retrieval=retrieval_metrics(matrix[queries], truth, matrix[gallery], labels[gallery]),
        sweep=sweep,
        same_similarities=same,
        different_similarities=different,
        mean_true_match_similarity=float(same.mean()) if same.size else float("nan"),
        query_set=query_set,
        max_false_match_rate=max_false_match_rate,
        n_profiles=len(profiles.names),
        split_sizes=split.sizes(),
        per_query=per_query,
    )


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
                "rank1": report.retrieval["rank1"],
                "mAP": report.retrieval["mAP"],
                "best_threshold": best.get("threshold", math.nan),
                "best_assignment_rate": best.get("assignment_rate", math.nan),
                "mean_true_match_similarity": mean,
                "mean_true_match_similarity_change_pct": change,
            }
        )
    return pd.DataFrame(rows)
