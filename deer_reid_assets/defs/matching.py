"""Matching assets: deer profiles from labelled detections, and the assignment of the rest."""

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from deer_reid_assets.core import embeddings as emb_core
from deer_reid_assets.core import matching

from .common import OWNERS, md_table
from .embeddings import baseline_embeddings
from .resources import DatabaseResource

GROUP = "matching"
FAMILY = "resnet50"

def _published(engine, family: str) -> str:
    with engine.connect() as conn:
        version = emb_core.published_version(conn, family)
    if version is None:
        raise dg.Failure(f"no published {family} embeddings: materialize the embedding asset first")
    return version

class ProfilesConfig(dg.Config):
    mirror_to_deer_table: bool = Field(
        default=True, description="Also write the published profile vectors onto the deer table (existing system)."
    )

@dg.asset(
    deps=[baseline_embeddings],
    group_name=GROUP,
    kinds={"numpy", "postgres"},
    owners=OWNERS,
    code_version="1",
    description="One prototype per deer: the L2-normalised mean embedding of its labelled (human-reviewed) "
    "detections, per embedding version (reid_deer_profiles), mirrored onto deer.feature_vector. Vectors the deer "
    "table held before are kept as profile version 'legacy'.",
)
def deer_profiles(context: dg.AssetExecutionContext, config: ProfilesConfig,
                  database: DatabaseResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    version = _published(engine, FAMILY)
    report = matching.build_profiles(engine, version, FAMILY, mirror_to_deer_table=config.mirror_to_deer_table)
    with engine.connect() as conn:
        sizes = pd.DataFrame(conn.execute(sa.text(
            """SELECT dr.name, dr.sex::text AS sex, p.n_detections FROM reid_deer_profiles p
               JOIN deer dr ON dr.id = p.deer_id WHERE p.version = :v ORDER BY p.n_detections DESC, dr.name"""),
            {"v": version}).all(), columns=["deer", "sex", "labelled_detections"])
    return dg.MaterializeResult(metadata={
        "embedding_version": version,
        "profiles": report.profiles,
        "labelled_detections": report.labelled_detections,
        "deer_with_labels_but_no_embedding": report.deer_without_embeddings,
        "legacy_vectors_saved": report.legacy_vectors_saved,
        "profiles_by_size": md_table(sizes.head(40)),
    })

class AssignmentConfig(dg.Config):
    threshold: float = Field(default=0.40, description="Assign when cosine similarity >= threshold.")
    top_k: int = Field(default=5, description="Candidates retrieved per detection (stored in reid_similarity_scores).")

@dg.asset(
    deps=[deer_profiles],
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
    code_version="1",
    description="Every unreviewed detection matched to its nearest profile of a compatible sex through pgvector "
    "(cosine); assigned when similarity >= threshold (detections.deer_id, reid_similarity_scores), otherwise left "
    "unassigned. Each run is logged with the previous values so it can be rolled back.",
)
def deer_assignments(context: dg.AssetExecutionContext, config: AssignmentConfig,
                     database: DatabaseResource) -> dg.MaterializeResult:
    engine = database.get_engine()
    version = _published(engine, FAMILY)
    report = matching.assign_detections(engine, version, threshold=config.threshold, top_k=config.top_k,
                                        run_id=context.run_id)
    context.log.info(f"assigned {report.assigned}/{report.considered} detections ({report.assignment_rate:.1%})")
    with engine.connect() as conn:
        sample = pd.DataFrame(conn.execute(sa.text(
            """SELECT l.detection_id::text AS detection, dr.name AS deer, round(l.similarity::numeric, 3) AS similarity
               FROM reid_assignment_log l LEFT JOIN deer dr ON dr.id = l.new_deer_id
               WHERE l.run_id = :r ORDER BY l.similarity DESC NULLS LAST LIMIT 15"""), {"r": report.run_id}).all(),
            columns=["detection", "deer", "similarity"])
    return dg.MaterializeResult(metadata={
        "embedding_version": version,
        "threshold": config.threshold,
        "detections_considered": report.considered,
        "assigned": report.assigned,
        "assignment_rate": dg.MetadataValue.float(round(report.assignment_rate, 4)),
        "changed": report.changed,
        "without_compatible_profile": report.no_candidate,
        "assignment_run": report.run_id,
        "top_matches": md_table(sample),
    })
