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
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from deer_reid_assets.core import families
from deer_reid_assets.core.embed.versions import load_vectors
from deer_reid_assets.core.evaluation import ensemble
from deer_reid_assets.core.evaluation.report import EvaluationReport, evaluate
from deer_reid_assets.core.evaluation.splits import EvalSplit, identity_split, split_roles
from deer_reid_assets.core.store import queries
from deer_reid_assets.core.store import schema as t


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


SPLIT_KEY_SQL = "COALESCE(f.sha256, d.image_id::text) || ':' || d.bbox::text"
"""What a detection is, independent of database ids: the same photo and box get the same split in
any database (a re-import, a fresh demo), so two runs compare like with like."""


def labelled_set(conn: sa.Connection) -> LabelledSet:
    """Detections of known identity: hidden ground truth where present, else a person's label."""
    rows = conn.execute(sa.text(
        f"""
        SELECT d.id::text, COALESCE(gt.identity, dr.name, dr.id::text) AS identity,
               COALESCE(d.corrected_classification, d.classification, 'unknown') AS cls,
               {SPLIT_KEY_SQL} AS split_key, COALESCE(d.burst_group_id::text, '') AS burst
        FROM detections d
        LEFT JOIN reid_image_files f ON f.image_id = d.image_id
        LEFT JOIN reid_ground_truth gt ON gt.detection_id = d.id
        LEFT JOIN deer dr ON dr.id = d.deer_id AND d.is_reviewed IS TRUE
        WHERE d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
          AND (gt.detection_id IS NOT NULL OR (d.is_reviewed IS TRUE AND d.deer_id IS NOT NULL))
        ORDER BY d.id
        """
    )).all()
    return LabelledSet([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], unique_keys([r[3] for r in rows]),
                       groups=[r[4] for r in rows])


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
    roles = split_roles(split, len(labelled.detection_ids))
    s = t.reid_eval_splits
    with engine.begin() as conn:
        known = set(conn.execute(sa.select(s.c.detection_id).where(s.c.split_name == name)).scalars())
        rows = [{"split_name": name, "detection_id": d, "identity": i, "role": str(r)}
                for d, i, r in zip(labelled.detection_ids, labelled.identities, roles) if d not in known]
        if rows:
            conn.execute(sa.insert(s), rows)
    return split


def query_detections(conn: sa.Connection, split_name: str = "default") -> list[str]:
    """Detections that are validation or test queries of the stored split: kept out of training."""
    return list(conn.execute(sa.text(
        "SELECT detection_id::text FROM reid_eval_splits WHERE split_name = :s AND role IN ('val_query', 'test_query')"),
        {"s": split_name}).scalars())


def labelled_matrices(engine: sa.Engine, versions: list[str], *, split_name: str = "default", seed: int = 0
                      ) -> tuple[LabelledSet, list[np.ndarray], EvalSplit]:
    """The labelled detections embedded in every one of ``versions``, one matrix per version (same
    row order), and the stored seeded split over exactly those detections."""
    with engine.connect() as conn:
        labelled = labelled_set(conn)
        loaded = [load_vectors(conn, v, labelled.detection_ids) for v in versions]  # labelled rows only
    keep = np.flatnonzero(np.logical_and.reduce([found for found, _ in loaded]))
    if not keep.size:
        raise ValueError(f"no labelled detection is embedded in every one of {versions}: nothing to evaluate")
    subset = labelled.subset(keep.tolist())
    matrices = [matrix[keep] for _, matrix in loaded]
    return subset, matrices, stored_split(engine, subset, name=split_name, seed=seed)


def evaluate_version(engine: sa.Engine, version: str, *, threshold: float = 0.40, query_set: str = "test",
                     split_name: str = "default", seed: int = 0, max_false_match_rate: float = 0.05
                     ) -> EvaluationReport:
    """Held-out protocol for one embedding version."""
    subset, (matrix,), split = labelled_matrices(engine, [version], split_name=split_name, seed=seed)
    return evaluate(matrix, subset.detection_ids, subset.identities, subset.classifications, split,
                            threshold=threshold, query_set=query_set, max_false_match_rate=max_false_match_rate)


def tune_ensemble(engine: sa.Engine, version_a: str, version_b: str, *, max_false_match_rate: float = 0.05,
                  seed: int = 0) -> ensemble.EnsembleChoice:
    """Search the ensemble weight and threshold on the validation queries."""
    subset, (a, b), split = labelled_matrices(engine, [version_a, version_b], seed=seed)
    return ensemble.search_weights(a, b, subset.detection_ids, subset.identities, subset.classifications, split,
                                   max_false_match_rate=max_false_match_rate, query_set="val")


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
    subset, matrices, split = labelled_matrices(engine, versions, seed=seed)
    by_version = dict(zip(versions, matrices))
    reports = {}
    for name, models in configurations.items():
        if len(models) == 1:
            matrix, blocks = by_version[next(iter(models))], None
        else:
            parts, blocks, start = [], [], 0
            for version, weight in models.items():
                part = by_version[version].astype(np.float64)
                parts.append(np.sqrt(weight) * part)
                blocks.append((start, start + part.shape[1], weight))
                start += part.shape[1]
            matrix = np.concatenate(parts, axis=1)
        reports[name] = evaluate(
            matrix, subset.detection_ids, subset.identities, subset.classifications, split,
            threshold=(thresholds or {}).get(name, threshold), query_set=query_set,
            max_false_match_rate=max_false_match_rate, blocks=blocks, veto=(vetoes or {}).get(name))
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


def live_assignment_stats(conn: sa.Connection) -> dict:
    """What the matcher wrote: unreviewed valid detections, how many have a deer, and (where hidden
    ground truth exists) how many of those are the wrong deer; the buck misidentification rate is
    bucks assigned to a wrong buck / bucks assigned."""
    row = conn.execute(sa.text(
        """
        SELECT count(*) AS detections,
               count(*) FILTER (WHERE d.deer_id IS NOT NULL) AS assigned,
               count(gt.detection_id) AS with_truth,
               count(*) FILTER (WHERE gt.detection_id IS NOT NULL AND d.deer_id IS NOT NULL) AS assigned_with_truth,
               count(*) FILTER (WHERE gt.detection_id IS NOT NULL AND d.deer_id IS NOT NULL
                                AND dr.name IS DISTINCT FROM gt.identity) AS false_matches,
               count(*) FILTER (WHERE gt.detection_id IS NOT NULL AND gt.identity IN
                                (SELECT name FROM deer WHERE name IS NOT NULL)) AS truth_has_profile_row,
               count(*) FILTER (WHERE gt.sex = 'buck' AND d.deer_id IS NOT NULL) AS bucks_assigned,
               count(*) FILTER (WHERE gt.sex = 'buck' AND d.deer_id IS NOT NULL AND dr.sex::text = 'buck'
                                AND dr.name IS DISTINCT FROM gt.identity) AS bucks_misidentified
        FROM detections d
        JOIN reid_crops c ON c.detection_id = d.id AND c.status = 'ok'
        LEFT JOIN reid_ground_truth gt ON gt.detection_id = d.id
        LEFT JOIN deer dr ON dr.id = d.deer_id
        WHERE d.is_reviewed IS NOT TRUE AND d.is_valid IS NOT FALSE AND d.is_duplicate IS NOT TRUE
        """
    )).mappings().one()
    stats = dict(row)
    stats["assignment_rate"] = stats["assigned"] / stats["detections"] if stats["detections"] else 0.0
    stats["false_match_rate"] = (stats["false_matches"] / stats["assigned_with_truth"]
                                 if stats["assigned_with_truth"] else None)
    stats["buck_misidentification_rate"] = (stats["bucks_misidentified"] / stats["bucks_assigned"]
                                            if stats["bucks_assigned"] else None)
    return stats


def save_evaluation(engine: sa.Engine, name: str, versions: dict, summary: dict, report_json: dict) -> int:
    with engine.begin() as conn:
        return conn.execute(sa.insert(t.reid_evaluations).values(name=name, versions=versions, summary=summary,
                                                                   report=report_json)
                            .returning(t.reid_evaluations.c.id)).scalar_one()
