"""Evaluation asset: the held-out protocol and the live assignments, on the same seeded split."""

import json
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from deer_reid_assets.core import families
from deer_reid_assets.core.embed import versions
from deer_reid_assets.core.evaluation import protocol
from deer_reid_assets.core.evaluation.plots import comparison_plot, evaluation_plot
from deer_reid_assets.core.evaluation.report import compare_reports
from deer_reid_assets.core.matcher_setup import current_ensemble, matcher_setup
from deer_reid_assets.core.store import queries

from .antlers import antler_features
from .automation import NIGHTLY
from .common import OWNERS, core_errors, figure, md_image, percent, rate
from .embeddings import published_embeddings
from .matching import deer_assignments, ensemble_weights
from .resources import DatabaseResource, ImageStoreResource

GROUP = "evaluation"

HEADLINE = [
    ("assignment_rate", "assignment rate at threshold"),
    ("false_match_rate", "false-match rate at threshold"),
    ("precision", "precision"),
    ("recall", "recall (queries whose deer has a profile)"),
    ("rank1", "rank-1"),
    ("mAP", "mAP"),
    ("mean_true_match_similarity", "mean true-match similarity"),
    ("best_threshold", "best threshold with FMR <= budget"),
    ("best_assignment_rate", "assignment rate at best threshold"),
    ("best_false_match_rate", "false-match rate at best threshold"),
    ("threshold", "threshold"),
    ("n_queries", "queries"),
    ("n_profiles", "profiles (gallery deer)"),
    ("n_held_out_identities", "held-out deer (no profile)"),
]


RATES = {"assignment_rate", "false_match_rate", "precision", "recall", "best_assignment_rate", "best_false_match_rate"}


def _fmt(value, key: str = "") -> str:
    if value is None:
        return "none qualifies"
    if not isinstance(value, float):
        return str(value)
    return percent(value) if key in RATES else f"{value:.3g}"


def headline_table(summaries: dict[str, dict]) -> pd.DataFrame:
    """The metrics a person reads, one column per report: rates as percentages, figures to 3 significant digits."""
    rows = [{"metric": label, **{name: _fmt(s.get(key), key) for name, s in summaries.items()}}
            for key, label in HEADLINE]
    return pd.DataFrame(rows)


class EvaluationConfig(dg.Config):
    threshold: float = Field(default=0.40, description="Operating threshold reported (the user's current 0.40).")
    max_false_match_rate: float = Field(default=0.05, description="FMR budget for the best-threshold search.")
    split_seed: int = Field(default=0, description="Seed of the identity-aware query/gallery split.")


@dg.asset(
    deps=[deer_assignments],
    group_name=GROUP,
    kinds={"numpy", "postgres"},
    owners=OWNERS,
    code_version="2",
    automation_condition=NIGHTLY,
    description="Re-ID evaluation of the published baseline embeddings: assignment rate, false-match rate, rank-1, "
    "mAP, the threshold sweep and the best threshold at FMR <= 5%, on a seeded identity-aware split with held-out "
    "individuals; plus what deer_assignments actually wrote, scored against hidden ground truth (false matches, buck "
    "misidentification: bucks assigned to a wrong buck), and the antler point counts per side from stored keypoints "
    "against the ground truth. JSON + plot. Runs nightly (03:00 UTC) or on demand, never after an upload.",
)
def reid_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, database: DatabaseResource,
                    image_store: ImageStoreResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    with core_errors():
        version = versions.require_published(engine, families.BASELINE)
    reports = {
        query_set: protocol.evaluate_version(engine, version, threshold=config.threshold, query_set=query_set,
                                               seed=config.split_seed, max_false_match_rate=config.max_false_match_rate)
        for query_set in ("val", "test")
    }
    from deer_reid_assets.core.antlers.evaluation import point_count_accuracy

    with engine.connect() as conn:
        live = protocol.live_assignment_stats(conn)
        points = point_count_accuracy(conn)
    test = reports["test"]
    png = evaluation_plot(test, f"baseline ({version}), test queries")
    out = image_store.reports
    out.mkdir(parents=True, exist_ok=True)
    (out / "reid_evaluation.png").write_bytes(png)
    payload = {"embedding_version": version, "live_assignments": live, "antler_point_counts": points,
               **{q: json.loads(r.to_json()) for q, r in reports.items()}}
    (out / "reid_evaluation.json").write_text(json.dumps(payload, indent=2, default=str))
    protocol.save_evaluation(engine, "reid_evaluation", {families.BASELINE: version}, test.summary(), payload)
    table = headline_table({f"{q} queries": r.summary() for q, r in reports.items()})
    with engine.connect() as conn:
        weights = queries.weights_of(conn, [version])
    return dg.MaterializeResult(metadata={
        "embedding_version": version,
        "weights": weights,
        "test_assignment_rate": rate(test.assignment["assignment_rate"]),
        "test_false_match_rate": rate(test.assignment["false_match_rate"]),
        "test_rank1": figure(test.retrieval["rank1"]),
        "test_mAP": figure(test.retrieval["mAP"]),
        "best_threshold_at_fmr_budget": figure(test.best["threshold"]) if test.best else "none qualifies",
        "live_assignment_rate": rate(live["assignment_rate"]),
        "live_false_match_rate": rate(live["false_match_rate"])
        if live["false_match_rate"] is not None else "no ground truth",
        "live_buck_misidentification_rate": rate(live["buck_misidentification_rate"])
        if live["buck_misidentification_rate"] is not None else "no bucks assigned with ground truth",
        "antler_point_count_accuracy": dg.MetadataValue.json(points)
        if any(v["detections"] for v in points.values())
        else "no buck detection with processed antlers and a ground-truth count",
        "summary": dg.MetadataValue.md(table.to_markdown(index=False)),
        "plot": md_image(png, "similarity histograms and threshold curves"),
        "json": dg.MetadataValue.path(str(out / "reid_evaluation.json")),
    })


class ReportConfig(dg.Config):
    threshold: float = Field(default=0.40, description="Operating threshold of the single models and the 0.6/0.4 row.")
    max_false_match_rate: float = Field(default=0.05)
    split_seed: int = Field(default=0)
    antler_tolerance: Optional[int] = Field(
        default=0, description="The '+ antler constraint' row: the matcher's configuration with the season-aware antler "
        "constraint at this tolerance (as deer_assignments applies it); null leaves the row out.")


@dg.asset(
    deps=[published_embeddings, ensemble_weights, antler_features],  # finetuned_embeddings feed published_embeddings
    group_name=GROUP,
    kinds={"numpy", "postgres"},
    owners=OWNERS,
    code_version="1",
    automation_condition=NIGHTLY,
    description="Before/after report (the roadmap's validate_embeddings): baseline ResNet50, multi-scale ResNet50 "
    "alone, EfficientNet-B0 alone, the roadmap's 0.6/0.4 ensemble, the tuned ensemble and (once trained) the "
    "fine-tuned triplet model, on the same test queries "
    "of the same seeded split: assignment rate, false-match rate, buck misidentification rate, rank-1, mAP, best "
    "threshold under the budget and mean true-match similarity with its change against the baseline; then the "
    "configuration the matcher uses '+ antler constraint' (profiles' per-season point counts from the gallery's "
    "stored keypoints, each query's from its own). Table, plot and JSON. Runs nightly (03:00 UTC) or on demand, "
    "never after an upload.",
)
def embedding_report(context: dg.AssetExecutionContext, config: ReportConfig, database: DatabaseResource,
                     image_store: ImageStoreResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    with core_errors():
        baseline = versions.require_published(engine, families.BASELINE)
        version_a, version_b = (versions.require_published(engine, f) for f in families.ENSEMBLE)
    tuned = current_ensemble(engine)
    if tuned is None:
        raise dg.Failure("no ensemble weights for the published versions: materialize ensemble_weights first")
    models, tuned_threshold = tuned
    with engine.connect() as conn:
        finetuned = versions.latest_version(conn, families.FINETUNED)
    veto = None
    if config.antler_tolerance is not None:
        from deer_reid_assets.core.antlers.profiles import evaluation_veto

        with engine.connect() as conn:
            veto = evaluation_veto(conn, tolerance=config.antler_tolerance)
    reports = protocol.compare_on_test(
        engine, baseline, version_a, version_b, tuned_weight=models[version_a], tuned_threshold=tuned_threshold,
        threshold=config.threshold, finetuned=finetuned.version if finetuned is not None else None,
        max_false_match_rate=config.max_false_match_rate, seed=config.split_seed, antler_veto=veto,
        constrain=matcher_setup(engine)[0] if veto is not None else None)
    table = compare_reports(reports, baseline=next(iter(reports)))
    png = comparison_plot(reports)
    out = image_store.reports
    out.mkdir(parents=True, exist_ok=True)
    (out / "embedding_report.png").write_bytes(png)
    payload = {"versions": {"baseline": baseline, "multiscale": version_a, "efficientnet": version_b,
                            "finetuned": finetuned.version if finetuned is not None else None},
               "rows": json.loads(table.to_json(orient="records")),
               "reports": {name: json.loads(r.to_json()) for name, r in reports.items()}}
    (out / "embedding_report.json").write_text(json.dumps(payload, indent=2))
    protocol.save_evaluation(engine, "embedding_report", payload["versions"], {"rows": payload["rows"]}, payload)
    shown = table.rename(columns={"mean_true_match_similarity_change_pct": "true-match sim change %"}).map(
        lambda v: "n/a" if v is None or (isinstance(v, float) and v != v) else (f"{v:.3f}" if isinstance(v, float) else v))
    with engine.connect() as conn:
        weights = queries.weights_of(conn, [v for v in payload["versions"].values() if v])
    return dg.MaterializeResult(metadata={
        "weights": weights,
        "comparison": dg.MetadataValue.md(shown.to_markdown(index=False)),
        "plot": md_image(png, "assignment rate vs false-match rate per model"),
        "antler_constraint": "off" if veto is None else (
            f"tolerance {veto.stats['tolerance']}: {veto.stats['queries_with_usable_count']} test queries confidently "
            f"counted in hard antler, {veto.stats['pairs_ruled_out']} query-profile pairs ruled out"),
        "json": dg.MetadataValue.path(str(out / "embedding_report.json")),
        **{f"{name}: test rank-1": figure(r.retrieval["rank1"]) for name, r in reports.items()},
    })
