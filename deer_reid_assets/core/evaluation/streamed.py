"""The held-out evaluation with the vectors read a chunk at a time (issue 15: memory flat in the
number of detections).

:func:`evaluate_streamed` measures what :func:`report.evaluate` measures, from a *source* of rows
instead of a matrix: ``rows(indices)`` yields the embeddings of those detection indices, in that
order, a chunk at a time (:func:`matrix_rows` over an array; ``protocol`` reads them from the
store). It never holds more than one chunk of vectors, the profiles (one per gallery deer), the
rank-1 / mAP sample of at most ``MAX_RETRIEVAL_QUERIES`` query vectors with their true-match
similarities, blocks of at most ``BLOCK`` queries x profiles (or x ``CHUNK``) similarities, and per
query its best profile and similarity; the labels and ids per detection are the caller's. Four
passes (the gallery is read twice, the queries once):

1. the retrieval sample's query vectors;
2. the gallery: per-deer sums of the unit rows (profiles are their normalised means, as
   :func:`profiles.build_profiles` computes them) and, for each sampled query, the similarities
   of its true-match gallery items ("positives") with their gallery positions;
3. the queries: best compatible profile (sex rule; the veto asked one block at a time), and the
   same / different-deer similarities (every k-th different pair past ``MAX_DIFFERENT_PAIRS``,
   the same k as in memory: it depends only on the numbers of queries and profiles);
4. the gallery again: for each positive, how many gallery items score higher, plus those that
   score the same earlier in the gallery (ties keep gallery order): its rank, exactly.

A matrix product's sums may differ in the last bit from the in-memory ones (OpenBLAS picks its
kernels by matrix shape, so a pair scored in a block of another size can round differently);
every count, rate and rank is then the same unless a similarity lies within that bit of a
threshold or of another item's. ``test_streamed_evaluation`` compares both on small data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from deer_reid_assets.core.evaluation.profiles import (
    Matches,
    Profiles,
    check_blocks,
    match_to_profiles,
    profile_sexes,
    unit_profile,
)
from deer_reid_assets.core.evaluation.report import (
    MAX_DIFFERENT_PAIRS,
    MAX_RETRIEVAL_QUERIES,
    EvaluationReport,
    assemble_report,
    check_inputs,
)
from deer_reid_assets.core.evaluation.splits import EvalSplit
from deer_reid_assets.core.vectors import check_dims, embedding_matrix, normalise_rows

Rows = Callable[[np.ndarray], Iterable[np.ndarray]]
"""``rows(indices)``: the embeddings of those detection indices, in order, one chunk at a time."""
CHUNK = 1024  # rows read at a time
BLOCK = 128  # queries scored at a time: every similarity block is at most BLOCK x profiles or BLOCK x CHUNK


def matrix_rows(matrix: np.ndarray, chunk: int = CHUNK) -> Rows:
    """A source of rows over an in-memory matrix, ``chunk`` rows at a time."""
    def rows(indices: np.ndarray) -> Iterable[np.ndarray]:
        for start in range(0, len(indices), chunk):
            yield matrix[indices[start:start + chunk]]
    return rows


def unit_rows(raw: np.ndarray) -> np.ndarray:
    """Checked (finite, 2-D) rows divided by their norms, as every in-memory step does first."""
    return normalise_rows(embedding_matrix(raw, "embeddings"), "embeddings")


class ProfileSums:
    """Profiles built a chunk at a time: what :func:`profiles.build_profiles` returns for the same
    rows (``identities`` and ``classes`` per row, all known before any vector is read)."""

    def __init__(self, identities: Sequence[str], classes: Sequence[str | None] | None) -> None:
        self.names, self.member_of, self.sexes = profile_sexes(identities, classes)
        self.sums: np.ndarray | None = None

    def add(self, offset: int, unit: np.ndarray) -> None:
        """Add the unit rows ``offset .. offset + len(unit)`` (in the order of ``identities``)."""
        if self.sums is None:
            self.sums = np.zeros((len(self.names), unit.shape[1]), dtype=unit.dtype)
        np.add.at(self.sums, self.member_of[offset:offset + unit.shape[0]], unit)

    def profiles(self, blocks: list | None = None, dim: int = 0) -> Profiles:
        if self.sums is None:
            return Profiles(names=[], vectors=np.zeros((0, dim)), sexes=[])
        counts = np.bincount(self.member_of, minlength=len(self.names))
        vectors = np.stack([unit_profile(name, self.sums[p] / int(counts[p]), blocks)
                            for p, name in enumerate(self.names)])
        return Profiles(names=self.names, vectors=vectors, sexes=self.sexes)


class _Ranks:
    """Rank-1 / mAP of :func:`scores.retrieval_metrics` with the gallery streamed twice; the
    sampled queries are scored ``BLOCK`` at a time against each chunk."""

    def __init__(self, truth: np.ndarray, gallery_labels: np.ndarray, max_queries: int | None) -> None:
        codes: dict[str, int] = {}
        self.g_codes = np.array([codes.setdefault(label, len(codes)) for label in gallery_labels], dtype=np.int64)
        q_codes = np.array([codes.get(label, -1) for label in truth], dtype=np.int64)
        keep = np.flatnonzero(q_codes >= 0)
        self.eligible = int(keep.size)
        if max_queries is not None and self.eligible > max_queries:
            keep = np.sort(np.random.default_rng(0).choice(keep, size=max_queries, replace=False))
        self.keep, self.codes = keep, q_codes[keep]
        self.queries: np.ndarray | None = None  # unit rows of the sample, set by the caller
        self.found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (query, gallery position, negated sim)

    def _blocks(self, gallery: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
        for start in range(0, self.keep.size, BLOCK):
            yield start, -(self.queries[start:start + BLOCK] @ gallery.T)  # ascending = descending similarity

    def positives(self, offset: int, gallery: np.ndarray) -> None:
        """Keep each sampled query's true-match items of this chunk: gallery position and similarity."""
        g_codes = self.g_codes[offset:offset + gallery.shape[0]]
        for start, negated in self._blocks(gallery):
            rows, cols = np.nonzero(self.codes[start:start + BLOCK, None] == g_codes[None, :])
            self.found.append(((rows + start).astype(np.int32), (cols + offset).astype(np.int32), negated[rows, cols]))

    def close_positives(self) -> None:
        rows, where, values = (np.concatenate([f[i] for f in self.found]) for i in range(3))  # int32, int32, float
        order = np.argsort(rows, kind="stable")
        self.where, self.values, self.found = where[order], values[order], []
        self.bounds = np.searchsorted(rows[order], np.arange(self.keep.size + 1))
        self.before = np.zeros(self.values.size, dtype=np.intp)

    def count(self, offset: int, gallery: np.ndarray) -> None:
        """Add, per positive, the items of this chunk that rank before it: a higher similarity, or
        the same one earlier in the gallery."""
        stop = offset + gallery.shape[0]
        for start, negated in self._blocks(gallery):
            ordered = np.sort(negated, axis=1)
            for r in range(negated.shape[0]):
                first = self.bounds[start + r]
                part = slice(first, self.bounds[start + r + 1])
                values, where = self.values[part], self.where[part]
                left = np.searchsorted(ordered[r], values, side="left")
                self.before[part] += left
                own = (where >= offset) & (where < stop)
                for k in np.flatnonzero(np.searchsorted(ordered[r], values, side="right") - left - own > 0):
                    earlier = negated[r, :max(0, min(where[k], stop) - offset)]
                    self.before[first + k] += np.count_nonzero(earlier == values[k])

    def result(self) -> dict:
        if self.keep.size == 0:
            return {"rank1": 0.0, "mAP": 0.0, "n_queries": 0}
        hits_at_1, ap_total = 0, 0.0
        for r in range(self.keep.size):
            ranks = np.sort(self.before[self.bounds[r]:self.bounds[r + 1]] + 1)
            hits_at_1 += int(ranks[0] == 1)
            ap_total += float(np.mean(np.arange(1, ranks.size + 1) / ranks))
        result = {"rank1": hits_at_1 / self.keep.size, "mAP": ap_total / self.keep.size, "n_queries": int(self.keep.size)}
        if self.keep.size < self.eligible:
            result["sampled_from"] = self.eligible
        return result


def evaluate_streamed(
    rows: Rows,
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
    """:func:`report.evaluate` over ``rows`` (see the module docstring); the same arguments
    otherwise, and the same report."""
    ids, labels, classes, threshold = check_inputs(detection_ids, identities, classifications, split, query_set,
                                                   threshold, len(detection_ids))
    gallery = split.gallery
    queries = split.val_query if query_set == "val" else split.test_query
    truth, query_classes = labels[queries], None if classes is None else classes[queries]
    sums = ProfileSums(labels[gallery], None if classes is None else classes[gallery])
    names = sums.names
    shape: dict = {}

    def read(indices: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
        """(offset within ``indices``, raw rows), checking ``blocks`` against the first chunk."""
        offset = 0
        for raw in rows(indices):
            if not shape:
                shape.update(dim=raw.shape[1], blocks=None if blocks is None else check_blocks(blocks, raw.shape[1]))
            yield offset, raw
            offset += raw.shape[0]

    ranks = _Ranks(truth, labels[gallery], MAX_RETRIEVAL_QUERIES)
    for offset, raw in read(queries[ranks.keep]):  # pass 1: the sample's query vectors
        unit = unit_rows(raw)
        if ranks.queries is None:
            ranks.queries = np.empty((ranks.keep.size, unit.shape[1]), dtype=unit.dtype)
        ranks.queries[offset:offset + unit.shape[0]] = unit

    for offset, raw in read(gallery):  # pass 2: profile sums and the sample's positives
        unit = unit_rows(raw)
        sums.add(offset, unit)
        if ranks.keep.size:
            check_dims(ranks.queries, unit, "query_emb", "gallery_emb")
            ranks.positives(offset, unit)
    profiles = sums.profiles(shape.get("blocks"), shape.get("dim", 0))

    best_name = np.full(queries.size, None, dtype=object)  # pass 3: matching and the distributions
    best_similarity = np.full(queries.size, np.nan, dtype=np.float64)
    names_array = np.asarray(names, dtype=object)
    profiled = set(names)
    n_same = sum(label in profiled for label in truth)
    n_different = queries.size * len(names) - n_same
    stride = max(1, -(-n_different // MAX_DIFFERENT_PAIRS))
    same, different = np.empty(n_same), np.empty(-(-n_different // stride))  # filled in query order
    n_seen = n_kept = n_own = 0
    gallery_ids, gallery_labels = (list(ids[gallery]), list(labels[gallery])) if veto is not None else ([], [])
    for offset, chunk in read(queries):
        for sub in range(0, chunk.shape[0], BLOCK):
            raw = chunk[sub:sub + BLOCK]
            part = slice(offset + sub, offset + sub + raw.shape[0])
            excluded = None if veto is None else veto(list(ids[queries[part]]), list(names), gallery_ids, gallery_labels)
            found = match_to_profiles(raw, profiles, None if query_classes is None else query_classes[part], excluded)
            best_name[part], best_similarity[part] = found.best_name, found.best_similarity
            if names:
                unit = unit_rows(raw)
                check_dims(unit, profiles.vectors, "query_emb", "profiles.vectors")
                similarities = (unit @ profiles.vectors.T).astype(np.float64)
                own = truth[part, None] == names_array[None, :]
                mine = similarities[own]
                same[n_own:n_own + mine.size], n_own = mine, n_own + mine.size
                others = similarities[~own]
                kept = others[(n_seen + np.arange(others.size)) % stride == 0] if stride > 1 else others
                different[n_kept:n_kept + kept.size], n_kept, n_seen = kept, n_kept + kept.size, n_seen + others.size

    if ranks.keep.size:  # pass 4: the ranks of the positives
        ranks.close_positives()
        for offset, raw in read(gallery):
            ranks.count(offset, unit_rows(raw))
    return assemble_report(threshold, query_set, max_false_match_rate, split, profiles, ids[queries], truth,
                           query_classes, Matches(best_name, best_similarity), same, different, ranks.result())
