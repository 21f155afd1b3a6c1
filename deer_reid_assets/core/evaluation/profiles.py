"""Profiles (one unit vector per deer, optionally block-wise for ensembles) and matching queries to them.

A *profile* is the L2-normalised mean of the (row-normalised) embeddings of one deer's gallery
detections. A query is *assigned* to its most similar sex-compatible profile (cosine) when that
similarity is ``>= threshold``; a query with no compatible profile is unassigned.

Block-wise profiles (model ensembles): with ``blocks = [(start, stop, weight), ...]`` tiling the
embedding columns (weights summing to 1), a profile is built per block (mean of that block's
columns over the deer's rows, L2-normalised), scaled by ``sqrt(weight)`` and concatenated. For rows
``concat(sqrt(w_k) * x_k)`` with unit ``x_k`` (see :mod:`core.evaluation.ensemble`), profile . query
is exactly ``sum_k w_k * cos(x_k, profile_k)`` and both are unit norm. A zero-weight block gets a
zero profile block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from deer_reid_assets.core.classes import sex_of
from deer_reid_assets.core.evaluation.sex import normalise_sex
from deer_reid_assets.core.vectors import check_dims, check_length, embedding_matrix, identity_labels, normalise_rows


@dataclass
class Profiles:
    """One unit-norm vector per known deer; ``sexes`` are 'buck' / 'doe' / 'unknown'."""

    names: list[str]
    vectors: np.ndarray  # (P, D)
    sexes: list[str]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D; got shape {self.vectors.shape}")
        check_length(self.names, self.vectors.shape[0], "names", "vectors")
        check_length(self.sexes, self.vectors.shape[0], "sexes", "vectors")


def _profile_sex(classes: list[str]) -> str:
    """Strict majority of buck vs doe votes (age classes count as buck); fawn/unknown ignored; tie or
    no votes -> 'unknown'."""
    sexes = [sex_of(c) for c in classes]
    bucks, does = sexes.count("buck"), sexes.count("doe")
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
    matrix = normalise_rows(embedding_matrix(embeddings, "embeddings"), "embeddings")
    checked = None if blocks is None else check_blocks(blocks, matrix.shape[1])
    labels = identity_labels(identities, "identities")
    check_length(labels, matrix.shape[0], "identities", "embeddings")
    if sexes is not None:
        check_length(sexes, matrix.shape[0], "sexes", "embeddings")
    classes = [normalise_sex(s) for s in sexes] if sexes is not None else ["unknown"] * len(labels)

    names, member_of = np.unique(np.asarray(labels, dtype=object), return_inverse=True)  # sorted names
    names = [str(n) for n in names]
    order = np.argsort(member_of, kind="stable")  # rows grouped by deer, in their original order
    bounds = np.searchsorted(member_of[order], np.arange(len(names) + 1))
    vectors = np.zeros((len(names), matrix.shape[1]), dtype=matrix.dtype)
    sexes_of_profiles = []
    for p, name in enumerate(names):
        members = order[bounds[p]:bounds[p + 1]]
        vectors[p] = unit_profile(name, matrix[members].mean(axis=0), checked)
        sexes_of_profiles.append(_profile_sex([classes[i] for i in members]))
    return Profiles(names=names, vectors=vectors, sexes=sexes_of_profiles)


def unit_profile(name: str, mean: np.ndarray, blocks: list[Block] | None) -> np.ndarray:
    """A deer's profile from the mean of its unit rows: L2-normalised, or per block (checked
    ``blocks``) normalised and scaled by ``sqrt(weight)``; a zero mean raises ValueError naming the deer."""
    vector = np.zeros_like(mean)
    if blocks is None:
        norm = np.linalg.norm(mean)
        if norm == 0:
            raise ValueError(f"embeddings of identity {name!r} average to the zero vector")
        return mean / norm
    for start, stop, weight in blocks:
        if weight == 0.0:
            continue  # contributes nothing to any similarity; stays zero
        part = mean[start:stop]
        norm = np.linalg.norm(part)
        if norm == 0:
            raise ValueError(f"embeddings of identity {name!r} average to the zero vector in block ({start}, {stop})")
        vector[start:stop] = part * (math.sqrt(weight) / norm)
    return vector


def profile_sexes(identities: Sequence[str], classes: Sequence[str | None] | None) -> tuple[list[str], np.ndarray, list[str]]:
    """(sorted names, each row's profile index, each profile's sex by majority of its rows' classes):
    what a profile is, without its vector."""
    labels = identity_labels(identities, "identities")
    if classes is not None:
        check_length(classes, len(labels), "sexes", "identities")
    sexes = [normalise_sex(s) for s in classes] if classes is not None else ["unknown"] * len(labels)
    names, member_of = np.unique(np.asarray(labels, dtype=object), return_inverse=True)
    votes: list[list[str]] = [[] for _ in names]
    for row, p in enumerate(member_of):
        votes[p].append(sexes[row])
    return [str(n) for n in names], member_of.reshape(-1), [_profile_sex(v) for v in votes]


@dataclass
class Matches:
    """Top-1 compatible profile per query: name (None if none compatible) and cosine (nan if none)."""

    best_name: np.ndarray  # object
    best_similarity: np.ndarray  # float


def match_to_profiles(
    query_emb: np.ndarray,
    profiles: Profiles,
    query_classes: Sequence[str | None] | None = None,
    excluded: np.ndarray | None = None,
) -> Matches:
    """Exact brute-force cosine top-1 under the sex rule; ties go to the earlier profile in
    ``profiles.names``. Without ``query_classes`` every query compares with every profile.
    ``excluded`` (queries x profiles, True = ruled out, e.g. by the antler constraint) removes pairs."""
    queries = normalise_rows(embedding_matrix(query_emb, "query_emb"), "query_emb")
    n = queries.shape[0]
    if query_classes is not None:
        check_length(query_classes, n, "query_classes", "query_emb")
    best_name = np.full(n, None, dtype=object)
    best_similarity = np.full(n, np.nan, dtype=np.float64)
    if n == 0 or not profiles.names:
        return Matches(best_name=best_name, best_similarity=best_similarity)
    check_dims(queries, profiles.vectors, "query_emb", "profiles.vectors")

    if excluded is not None and excluded.shape != (n, len(profiles.names)):
        raise ValueError(f"excluded must be {(n, len(profiles.names))} (queries x profiles); got {excluded.shape}")
    allowed = None if query_classes is None else _SexRule(query_classes, profiles.sexes)
    names = np.asarray(profiles.names, dtype=object)
    for start in range(0, n, QUERY_BLOCK):  # memory: QUERY_BLOCK x profiles, whatever the number of queries
        rows = slice(start, min(start + QUERY_BLOCK, n))
        similarities = (queries[rows] @ profiles.vectors.T).astype(np.float64)
        if allowed is not None:
            similarities = np.where(allowed.block(rows), similarities, -np.inf)
        if excluded is not None:
            similarities = np.where(excluded[rows], -np.inf, similarities)
        best = np.argmax(similarities, axis=1)  # first maximum -> earliest profile on ties
        top = similarities[np.arange(similarities.shape[0]), best]
        found = np.isfinite(top)
        best_name[rows][found] = names[best[found]]
        best_similarity[rows][found] = top[found]
    return Matches(best_name=best_name, best_similarity=best_similarity)


QUERY_BLOCK = 4096
"""Queries scored against the profiles at once: bounds the evaluation's similarity matrices."""


class _SexRule:
    """``core.evaluation.sex.sex_compatible`` for every (query, profile) pair, as array operations: the classes are
    read once per query and once per profile instead of once per pair."""

    _CODES = {"buck": 1, "doe": 2, "unknown": 3}

    def __init__(self, query_classes, profile_sexes) -> None:
        self.query = np.array([self._CODES.get(normalise_sex(c), 0) for c in query_classes], dtype=np.int8)
        self.query[self.query == 3] = 0  # an unknown (fawn, None) query matches every profile
        self.profile = np.array([self._CODES.get(normalise_sex(s), 4) for s in profile_sexes], dtype=np.int8)

    def block(self, rows: slice) -> np.ndarray:
        query = self.query[rows, None]
        return (query == 0) | (query == self.profile[None, :]) | (self.profile == 3)[None, :]
