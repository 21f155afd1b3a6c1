"""Matching assets: deer profiles from labelled detections, the ensemble's weights, and the
assignment of every unreviewed detection."""

from typing import Optional

import dagster as dg
from pydantic import Field

from deer_reid_assets.core import families, matching
from deer_reid_assets.core.evaluation import protocol
from deer_reid_assets.core.evaluation.plots import ensemble_curve_plot
from deer_reid_assets.core.matcher_setup import matcher_setup
from deer_reid_assets.core.proposal_checks import degenerate_proposals
from deer_reid_assets.core.store import queries

from .antlers import antler_features
from .automation import DOWNSTREAM
from .common import OWNERS, core_errors, figure, md_image, md_table, rate
from .embeddings import published_embeddings
from .resources import DatabaseResource

GROUP = "matching"


class ProfilesConfig(dg.Config):
    mirror_to_deer_table: bool = Field(
        default=True, description="Also write the published profile vectors onto the deer table (existing system)."
    )


@dg.asset(
    deps=[published_embeddings],
    group_name=GROUP,
    kinds={"numpy", "postgres"},
    owners=OWNERS,
    code_version="2",
    automation_condition=DOWNSTREAM,
    description="One prototype per deer and model: the L2-normalised mean embedding of its labelled "
    "(human-reviewed) detections, for every published embedding version (reid_deer_profiles), mirrored onto "
    "deer.feature_vector / _multiscale / _efficientnet with deer.embedding_version naming what produced them. "
    "Vectors a column held before this pipeline first wrote it are kept as profile version 'legacy-<model>'.",
)
def deer_profiles(context: dg.AssetExecutionContext, config: ProfilesConfig,
                  database: DatabaseResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    try:
        versions, reports, set_id = matching.rebuild_profiles(engine, mirror_to_deer_table=config.mirror_to_deer_table)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    base = reports[families.BASELINE]
    with engine.connect() as conn:
        sizes = queries.profile_sizes(conn, versions[families.BASELINE])
    return dg.MaterializeResult(metadata={
        "embedding_versions": dg.MetadataValue.json(versions),
        "deer_embedding_version": set_id or "not mirrored",
        "profiles": base.profiles,
        "labelled_detections": base.labelled_detections,
        "deer_with_labels_but_no_embedding": base.deer_without_embeddings,
        "legacy_vectors_saved": sum(r.legacy_vectors_saved for r in reports.values()),
        "profiles_by_size": md_table(sizes.head(40)),
    })


class EnsembleWeightsConfig(dg.Config):
    max_false_match_rate: float = Field(default=0.05, description="False-match budget of the search.")
    split_seed: int = Field(default=0, description="Seed of the identity-aware split (val queries are searched).")
    search_again: bool = Field(default=False, description="Search even when the same versions and labels were searched.")


@dg.asset(
    deps=[published_embeddings],
    group_name=GROUP,
    kinds={"numpy", "postgres"},
    owners=OWNERS,
    code_version="1",
    automation_condition=DOWNSTREAM,
    description="Ensemble similarity = w x multi-scale + (1 - w) x EfficientNet. Searches w in 0..1 (step 0.05) and "
    "the threshold on the validation queries of the seeded split to maximise the assignment rate with false-match "
    "rate <= budget; stores the choice with the searched curve (reid_ensemble_weights) beside the roadmap's 0.6/0.4. "
    "When nothing meets the budget it keeps the w with the best val mAP and the operating threshold, and says so.",
)
def ensemble_weights(context: dg.AssetExecutionContext, config: EnsembleWeightsConfig,
                     database: DatabaseResource) -> dg.MaterializeResult:
    with core_errors():
        search = protocol.search_ensemble_weights(
            database.get_engine(), max_false_match_rate=config.max_false_match_rate, split_seed=config.split_seed,
            search_again=config.search_again)
    versions = dg.MetadataValue.json(dict(zip(families.ENSEMBLE, (search.version_a, search.version_b))))
    with database.get_engine().connect() as conn:  # every page with figures names the weights behind them
        weights = queries.weights_of(conn, [search.version_a, search.version_b])
    if search.choice is None:
        context.log.info(f"same versions and labels as search {search.reused}: keeping w={search.weight:.2f}")
        return dg.MaterializeResult(metadata={
            "weight_multiscale": figure(search.weight),
            "threshold": figure(search.threshold) if search.threshold is not None
            else "keep operating threshold",
            "meets_false_match_budget": search.meets_budget,
            "reused_search": search.reused,
            "versions": versions,
            "weights": weights,
        })
    choice = search.choice
    if not choice.meets_budget:
        context.log.warning(f"no weight/threshold keeps FMR <= {config.max_false_match_rate:.0%} on val queries; "
                            f"keeping w={choice.weight:.2f} (best val mAP) and the operating threshold")
    return dg.MaterializeResult(metadata={
        "weight_multiscale": figure(choice.weight),
        "weight_efficientnet": figure(1 - choice.weight),
        "threshold": figure(choice.threshold) if choice.threshold is not None else "keep operating threshold",
        "meets_false_match_budget": choice.meets_budget,
        "val_assignment_rate": rate(choice.assignment_rate) if choice.meets_budget else "n/a",
        "val_false_match_rate": rate(choice.false_match_rate) if choice.meets_budget else "n/a",
        "roadmap_0.6_0.4": dg.MetadataValue.json(choice.to_json()["roadmap"]),
        "versions": versions,
        "weights": weights,
        "curve": md_table(choice.curve),
        "curve_plot": md_image(ensemble_curve_plot(choice.curve, choice.weight), "ensemble weight search"),
    })


class AssignmentConfig(dg.Config):
    threshold: float = Field(default=0.40, description="Operating threshold when no tuned threshold applies.")
    top_k: int = Field(default=5, description="Candidates retrieved per detection and model.")
    method: str = Field(default="auto", description="'auto' (tuned ensemble when there is one, else baseline), "
                        "'ensemble' or 'baseline'.")
    antler_tolerance: Optional[int] = Field(
        default=0, description="Season-aware antler constraint: bucks of one hard-antler season whose confident point "
        "counts differ by more than this cannot match; null switches it off.")
    search: str = Field(default="exact", description="'exact' (score every compatible profile) or 'hnsw' "
                        "(the profile vectors' HNSW index, approximate; README 'Speed', 'The cost curve').")


@dg.asset(
    deps=[deer_profiles, ensemble_weights, antler_features],
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
    code_version="3",
    automation_condition=DOWNSTREAM,
    description="Every unreviewed detection matched to its nearest profile of a compatible sex. Candidates come from "
    "pgvector (cosine top-k per model); with the tuned ensemble the combined similarity is computed exactly and a "
    "bound check re-scores against all profiles when the top-k could miss the best. Assigned when similarity >= "
    "threshold (detections.deer_id, reid_similarity_scores), otherwise left unassigned; each run is logged with the "
    "previous values so it can be rolled back. The season-aware antler constraint skips a buck candidate whose "
    "confident point count in the same hard-antler season differs (antler_tolerance); each time it changed a "
    "decision the run records it.",
)
def deer_assignments(context: dg.AssetExecutionContext, config: AssignmentConfig,
                     database: DatabaseResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    try:
        models, threshold, method = matcher_setup(engine, config.method, config.threshold)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    report = matching.assign_detections(engine, models, threshold=threshold, top_k=config.top_k, method=method,
                                        run_id=context.run_id, antler_tolerance=config.antler_tolerance,
                                        search=config.search)
    context.log.info(f"{method}: assigned {report.assigned}/{report.considered} detections "
                     f"({report.assignment_rate:.1%}) at threshold {threshold:.2f}")
    with engine.connect() as conn:
        sample = queries.top_assignments(conn, report.run_id)
        weights = queries.weights_of(conn, list(models))
        warning = degenerate_proposals(queries.run_proposals(conn, report.run_id))
    if warning:
        context.log.warning(warning)
    return dg.MaterializeResult(metadata={
        "method": method,
        "weights": weights,
        "proposal_warning": warning or "none (proposals spread over deer and similarities)",
        "embedding_versions_and_ensemble_weights": dg.MetadataValue.json(models),
        "threshold": threshold,
        "detections_considered": report.considered,
        "assigned": report.assigned,
        "assignment_rate": rate(report.assignment_rate),
        "changed": report.changed,
        "without_compatible_profile": report.no_candidate,
        "rescored_against_all_profiles": report.rescored,
        "search": config.search,
        "antler_constraint": "off" if config.antler_tolerance is None else f"tolerance {config.antler_tolerance}",
        "changed_by_antler_constraint": report.antler_vetoes,
        "assignment_run": report.run_id,
        "top_matches": md_table(sample),
    })
