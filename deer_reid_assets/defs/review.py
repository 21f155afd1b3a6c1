"""Active learning in Dagster: ``review_labels`` (the labelled pairs the review app's corrections give),
a sensor, off by default, that re-trains the deer-specific model after N new corrections, and one that
rebuilds the profiles after a person merged or split deer."""

import os

import dagster as dg
import pandas as pd

from deer_reid_assets.core.review.labels import review_pairs
from deer_reid_assets.core.store import deer_edits as deer_edits_store
from deer_reid_assets.core.store import review as review_store

from .common import OWNERS, md_table
from .embeddings import finetuned_embeddings
from .matching import deer_assignments, deer_profiles
from .resources import DatabaseResource
from .training import finetuned_reid_model, triplet_dataset

GROUP = "review"
RETRAIN_AFTER_ENV = "DEER_REID_RETRAIN_AFTER"
DEFAULT_RETRAIN_AFTER = 50


@dg.asset(
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    code_version="1",
    description="Labelled pairs from the review app's corrections (`deer-reid review`, http://127.0.0.1:3001): "
    "a confirmed or reassigned detection is a positive for its deer; a proposal a person rejected is a confirmed "
    "hard negative for the proposed deer. Confirmed, reassigned and new-deer detections are reviewed, so the next "
    "triplet_dataset includes them as labelled detections.",
)
def review_labels(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    with database.get_engine().connect() as conn:
        pairs = review_pairs(conn)
    frame = pd.DataFrame([(p.action, "positive" if p.positive else "hard negative") for p in pairs],
                         columns=["action", "label"])
    table = (frame.value_counts().rename("pairs").reset_index() if len(frame)
             else pd.DataFrame(columns=["action", "label", "pairs"]))
    return dg.MaterializeResult(metadata={
        "pairs": len(pairs),
        "positives": sum(p.positive for p in pairs),
        "hard_negatives": sum(not p.positive for p in pairs),
        "deer_with_hard_negatives": len({p.deer_id for p in pairs if not p.positive}),
        "by_action": md_table(table),
    })


retrain_from_corrections_job = dg.define_asset_job(
    "retrain_from_corrections",
    selection=dg.AssetSelection.assets(review_labels, triplet_dataset, finetuned_reid_model, finetuned_embeddings),
    description="Re-train the deer-specific model on the labels the review app added; the finetuned_embeddings "
    "audit (the A/B gate) decides whether the new model is published.",
)


def retrain_after() -> int:
    """How many new corrections trigger a re-train ($DEER_REID_RETRAIN_AFTER, default 50)."""
    raw = os.environ.get(RETRAIN_AFTER_ENV, "").strip()
    try:
        value = int(raw) if raw else DEFAULT_RETRAIN_AFTER
    except ValueError as exc:
        raise ValueError(f"{RETRAIN_AFTER_ENV} must be a whole number of corrections, got {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{RETRAIN_AFTER_ENV} must be at least 1, got {value}")
    return value


@dg.sensor(
    job=retrain_from_corrections_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Off by default. When started, launches retrain_from_corrections once the review app has recorded "
    f"${RETRAIN_AFTER_ENV} (default {DEFAULT_RETRAIN_AFTER}) new decisions (skips and undone ones not counted) "
    "since the last re-train it launched.",
)
def retrain_on_corrections_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource) -> dg.SensorResult:
    after_id = int(context.cursor or 0)
    need = retrain_after()
    with database.get_engine().connect() as conn:
        n, newest = review_store.decisions_since(conn, after_id)
    if n < need:
        return dg.SensorResult(skip_reason=f"{n} new correction(s) since the last re-train; re-trains after {need}",
                               cursor=str(after_id))
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"corrections-{newest}",
                                                       tags={"deer-reid/corrections": str(n)})],
                           cursor=str(newest))


rebuild_profiles_job = dg.define_asset_job(
    "rebuild_profiles",
    selection=dg.AssetSelection.assets(deer_profiles, deer_assignments),
    description="Profiles and matching again, after deer were merged or split in the review app.",
)


@dg.sensor(
    job=rebuild_profiles_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches the review app's merges and splits (and their undo): the profiles of the deer they "
    "touched are stale, so it launches rebuild_profiles (deer_profiles, then deer_assignments).",
)
def profiles_after_deer_edits_sensor(context: dg.SensorEvaluationContext,
                                     database: DatabaseResource) -> dg.SensorResult:
    with database.get_engine().connect() as conn:
        marker = deer_edits_store.edits_marker(conn)
    if marker == (context.cursor or "0|"):
        return dg.SensorResult(skip_reason="no merge or split since the profiles were last rebuilt", cursor=marker)
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"deer-edits-{marker}")], cursor=marker)
