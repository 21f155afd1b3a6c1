"""Evaluation against the database: what the truth is, which split, and what the live matcher did.

Two views, both computed, never typed in:

* **Held-out protocol** (``report.evaluate``): every detection with a known identity (hidden
  ground truth, else a person's label) is split by a seeded, identity-aware, hash-stable split
  (stored in ``reid_eval_splits``); some individuals are held out of the gallery entirely (new
  animals). Profiles come from the gallery; val/test queries give assignment rate, false-match
  rate, rank-1, mAP, the threshold sweep and the best threshold at FMR <= 5%.
* **Live assignments**: what ``deer_assignments`` wrote to ``detections.deer_id`` for unreviewed
  detections, scored against hidden ground truth where there is some.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.core import families
from deer_reid_assets.core.evaluation import ensemble, streamed
from deer_reid_assets.core.evaluation.report import EvaluationReport
from deer_reid_assets.core.evaluation.splits import EvalSplit, identity_split, split_by_hash, split_roles, unit_hash
from deer_reid_assets.core.store import evaluations, queries
from deer_reid_assets.core.store import schema as t
from deer_reid_assets.core.store import vectors as stored_vectors
from deer_reid_assets.core.store.evaluations import (  # noqa: F401 - re-exported: callers use protocol
    SPLIT_KEY_SQL,
    live_assignment_stats,
    query_detections,
    save_evaluation,
)
from deer_reid_assets.core.vectors import UNIT_NORM_TOLERANCE, unit_norm_rows


@dataclass
class LabelledSet:
    detection_ids: list[str]
    identities: list[str]
    classifications: list[str]
    split_keys: list[str]  # content keys (photo sha256 + box): splits do not depend on random row ids
    groups: list[str] | None = None  # burst of each detection ('' = none): one burst, one split role

    def subset(self, keep: list[int]) -> LabelledSet:
        groups = [self.groups[k] for k in keep] if self.groups is not None else None
        return LabelledSet(*([values[k] for k in keep] for values in
                             (self.detection_ids, self.identities, self.classifications, self.split_keys)),
                           groups=groups)


def labelled_set(conn: sa.Connection) -> LabelledSet:
    """Detections of known identity: hidden ground truth where present, else a person's label."""
    columns: tuple[list, ...] = ([], [], [], [], [])
    for row in evaluations.labelled_rows(conn):
        for column, value in zip(columns, row):
            column.append(value)
    ids, identities, classes, keys, groups = columns
    return LabelledSet(ids, identities, classes, keys, groups=groups)


def _labelled_hashes(conn: sa.Connection, seed: int) -> tuple[LabelledSet, np.ndarray]:
    """The labelled set without split keys or bursts, and each detection's split hash ``u``
    (:func:`splits.split_by_hash`): what an evaluation keeps per detection."""
    ids, identities, classes, u = [], [], [], array("d")
    for det, identity, cls, key, burst in evaluations.labelled_rows(conn):
        ids.append(det)
        identities.append(identity)
        classes.append(cls)
        u.append(unit_hash(seed, "detection", burst or key))
    return LabelledSet(ids, identities, classes, [], groups=None), np.frombuffer(u, dtype=np.float64)


def unique_keys(keys: list[str]) -> list[str]:
    """Content keys made unique (the same box listed twice in one photo gets '#2', '#3', ...)."""
    seen: dict[str, int] = {}
    out = []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return out


def labelled_fingerprint(conn: sa.Connection) -> str:
    """A digest of the labelled set (detections and identities): what a tuned result depends on."""
    labelled = labelled_set(conn)
    digest = hashlib.sha256()
    for key, identity in sorted(zip(labelled.split_keys, labelled.identities)):
        digest.update(f"{key}={identity};".encode())
    return digest.hexdigest()[:16]


def stored_split(engine: sa.Engine, labelled: LabelledSet, *, name: str = "default", seed: int = 0,
                 held_out_fraction: float = 0.2, gallery_fraction: float = 0.5) -> EvalSplit:
    """The seeded split of ``labelled``, recorded in ``reid_eval_splits`` (new detections are added;
    the hash-based split never moves a detection that was already placed)."""
    split = identity_split(labelled.split_keys, labelled.identities, seed=seed, groups=labelled.groups,
                                   held_out_fraction=held_out_fraction, gallery_fraction=gallery_fraction)
    evaluations.record_split(engine, labelled.detection_ids, labelled.identities,
                             split_roles(split, len(labelled.detection_ids)), name)
    return split


def labelled_subset(engine: sa.Engine, versions: list[str], *, split_name: str = "default", seed: int = 0
                    ) -> tuple[LabelledSet, EvalSplit]:
    """The labelled detections embedded in every one of ``versions`` (asked of the store, no vector
    read) and the stored seeded split over exactly those detections."""
    with engine.connect() as conn:
        labelled, u = _labelled_hashes(conn, seed)
        found = np.logical_and.reduce([stored_vectors.embedded(conn, v, labelled.detection_ids) for v in versions])
    keep = np.flatnonzero(found)
    if not keep.size:
        raise ValueError(f"no labelled detection is embedded in every one of {versions}: nothing to evaluate")
    subset = LabelledSet(*([values[k] for k in keep] for values in
                           (labelled.detection_ids, labelled.identities, labelled.classifications)), [])
    del labelled
    split = split_by_hash(u[keep], subset.identities, seed=seed)
    evaluations.record_split(engine, subset.detection_ids, subset.identities,
                             split_roles(split, len(subset.detection_ids)), split_name)
    return subset, split


def stored_rows(engine: sa.Engine, versions: list[str], detection_ids: list[str],
                combine: Callable[[list[np.ndarray]], np.ndarray], *, chunk: int = streamed.CHUNK) -> streamed.Rows:
    """A source of rows (:mod:`core.evaluation.streamed`) read from the store ``chunk`` detections
    at a time: each version's float32 vectors of those detections, ``combine``d into one row each."""
    def rows(indices: np.ndarray) -> Iterator[np.ndarray]:
        with engine.connect() as conn:
            for start in range(0, len(indices), chunk):
                ids = [detection_ids[i] for i in indices[start:start + chunk]]
                parts = []
                for version in versions:
                    found, matrix = stored_vectors.read_chunk(conn, version, ids)
                    if not found.all():
                        raise ValueError(f"detection {ids[int(np.argmin(found))]} has no vector in {version} "
                                         "any more (deleted during the evaluation?): evaluate again")
                    parts.append(matrix)
                yield combine(parts)
    return rows


def _weighted(models: dict[str, float]) -> tuple[Callable[[list[np.ndarray]], np.ndarray], list | None]:
    """How a configuration's rows are made: one model's vectors as stored; several, the
    concatenation of sqrt(weight) x each (float64) with the blocks of block-wise profiles."""
    if len(models) == 1:
        return (lambda parts: parts[0]), None
    weights = list(models.values())
    blocks = [(k * t.EMBEDDING_DIM, (k + 1) * t.EMBEDDING_DIM, w) for k, w in enumerate(weights)]
    return (lambda parts: np.concatenate([np.sqrt(w) * p.astype(np.float64) for w, p in zip(weights, parts)],
                                         axis=1)), blocks


def evaluate_version(engine: sa.Engine, version: str, *, threshold: float = 0.40, query_set: str = "test",
                     split_name: str = "default", seed: int = 0, max_false_match_rate: float = 0.05,
                     chunk: int = streamed.CHUNK) -> EvaluationReport:
    """Held-out protocol for one embedding version, its vectors read ``chunk`` at a time."""
    subset, split = labelled_subset(engine, [version], split_name=split_name, seed=seed)
    rows = stored_rows(engine, [version], subset.detection_ids, lambda parts: parts[0], chunk=chunk)
    return streamed.evaluate_streamed(rows, subset.detection_ids, subset.identities, subset.classifications, split,
                                      threshold=threshold, query_set=query_set,
                                      max_false_match_rate=max_false_match_rate)


def tune_ensemble(engine: sa.Engine, version_a: str, version_b: str, *, max_false_match_rate: float = 0.05,
                  seed: int = 0, chunk: int = streamed.CHUNK, weights=ensemble.DEFAULT_WEIGHTS
                  ) -> ensemble.EnsembleChoice:
    """Search the ensemble weight and threshold on the validation queries (each weight reads the
    two versions' vectors again, ``chunk`` at a time)."""
    subset, split = labelled_subset(engine, [version_a, version_b], seed=seed)

    def rows_at(weight: float) -> streamed.Rows:
        def combine(parts: list[np.ndarray]) -> np.ndarray:
            left, right = (unit_norm_rows(p, name, UNIT_NORM_TOLERANCE) for p, name in zip(parts, ("a", "b")))
            return ensemble.ensemble_vectors(left, right, weight)[0]
        return stored_rows(engine, [version_a, version_b], subset.detection_ids, combine, chunk=chunk)

    return ensemble.search_weights_streamed(rows_at, (t.EMBEDDING_DIM, t.EMBEDDING_DIM), subset.detection_ids,
                                            subset.identities, subset.classifications, split,
                                            weights=weights, max_false_match_rate=max_false_match_rate,
                                            query_set="val")


@dataclass
class EnsembleSearch:
    """The ensemble weights for two published versions: searched now (``choice``) or the stored
    search ``reused`` because the versions, budget, labels and split were searched before."""

    version_a: str
    version_b: str
    weight: float
    threshold: float | None
    meets_budget: bool
    reused: int | None = None  # id of the stored search that was kept
    choice: ensemble.EnsembleChoice | None = None  # the new search (None when reused)


def search_ensemble_weights(engine: sa.Engine, *, max_false_match_rate: float = 0.05, split_seed: int = 0,
                            search_again: bool = False) -> EnsembleSearch:
    """Tune the ensemble of the published :data:`families.ENSEMBLE` versions on the validation
    queries and store the choice, unless the same search was stored before (``search_again`` forces it)."""
    from deer_reid_assets.core.embed.versions import require_published

    version_a, version_b = (require_published(engine, f) for f in families.ENSEMBLE)
    with engine.connect() as conn:
        fingerprint = labelled_fingerprint(conn)
        done = queries.find_ensemble_search(conn, version_a, version_b, max_false_match_rate=max_false_match_rate,
                                            labelled_fingerprint=fingerprint, split_seed=split_seed)
    if done is not None and not search_again:
        return EnsembleSearch(version_a, version_b, done.weight, done.threshold, done.meets_budget, reused=done.id)
    choice = tune_ensemble(engine, version_a, version_b, max_false_match_rate=max_false_match_rate, seed=split_seed)
    search = {**choice.to_json(), "labelled_fingerprint": fingerprint, "split_seed": split_seed}
    with engine.begin() as conn:
        queries.save_ensemble_search(conn, version_a=version_a, version_b=version_b, weight=choice.weight,
                                     threshold=choice.threshold, meets_budget=choice.meets_budget,
                                     max_false_match_rate=max_false_match_rate, search=search)
    return EnsembleSearch(version_a, version_b, choice.weight, choice.threshold, choice.meets_budget, choice=choice)


def evaluate_configurations(engine: sa.Engine, configurations: dict[str, dict[str, float]], *,
                            thresholds: dict[str, float] | None = None, threshold: float = 0.40,
                            query_set: str = "test", max_false_match_rate: float = 0.05, seed: int = 0,
                            vetoes: dict | None = None) -> dict[str, EvaluationReport]:
    """Evaluate matcher configurations (``{name: {version: weight}}``; one version = a single model,
    several = the weighted sum of their cosines, evaluated exactly with block-wise profiles) on the
    same queries of the same split: the detections embedded by every version involved."""
    versions = sorted({v for models in configurations.values() for v in models})
    subset, split = labelled_subset(engine, versions, seed=seed)
    reports = {}
    for name, models in configurations.items():
        combine, blocks = _weighted(models)
        reports[name] = streamed.evaluate_streamed(
            stored_rows(engine, list(models), subset.detection_ids, combine), subset.detection_ids,
            subset.identities, subset.classifications, split, threshold=(thresholds or {}).get(name, threshold),
            query_set=query_set, max_false_match_rate=max_false_match_rate, blocks=blocks,
            veto=(vetoes or {}).get(name))
    return reports


def compare_on_test(engine: sa.Engine, baseline: str, version_a: str, version_b: str, *, tuned_weight: float,
                    tuned_threshold: float | None, threshold: float = 0.40, roadmap_weight: float = 0.6,
                    finetuned: str | None = None, max_false_match_rate: float = 0.05, seed: int = 0,
                    antler_veto=None, constrain: dict[str, float] | None = None) -> dict[str, EvaluationReport]:
    """Baseline, each model alone, the roadmap's ensemble, the tuned ensemble (and the fine-tuned
    model when there is one) on the same test queries of the same split; with ``antler_veto`` (see
    ``report.evaluate``) also the configuration the matcher uses (``constrain``, ``{version: weight}``;
    the tuned ensemble when not given) under the antler constraint: "<its row> + antler constraint"."""
    tuned = f"tuned ensemble {tuned_weight:.2f}/{1 - tuned_weight:.2f}"
    configurations = {
        "baseline (ResNet50)": {baseline: 1.0},
        "multi-scale ResNet50": {version_a: 1.0},
        "EfficientNet-B0": {version_b: 1.0},
        f"ensemble {roadmap_weight:.1f}/{1 - roadmap_weight:.1f}": {version_a: roadmap_weight, version_b: 1 - roadmap_weight},
        tuned: {version_a: tuned_weight, version_b: 1 - tuned_weight},
    }
    if finetuned:
        configurations["fine-tuned deer re-ID model"] = {finetuned: 1.0}
    thresholds = {tuned: tuned_threshold} if tuned_threshold is not None else {}
    vetoes = {}
    if antler_veto is not None:
        models = constrain or configurations[tuned]
        base = next((name for name, m in configurations.items() if _same_models(m, models)), None)
        if base is None:  # e.g. a published fine-tuned model older than the newest one
            base = "matcher (" + ", ".join(f"{v} x {w:.2f}" for v, w in models.items()) + ")"
            configurations[base] = models
        constrained = f"{base} + antler constraint"
        configurations[constrained] = models
        thresholds[constrained] = thresholds.get(base, threshold)
        vetoes[constrained] = antler_veto
    return evaluate_configurations(engine, configurations, thresholds=thresholds or None, threshold=threshold,
                                   max_false_match_rate=max_false_match_rate, seed=seed, vetoes=vetoes)


def _same_models(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a)
