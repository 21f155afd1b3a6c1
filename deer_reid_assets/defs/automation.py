"""Declarative automation: what recomputes when something upstream changes.

``eager()`` alone requests an asset when a parent is materialized again, but does not react to a
``code_version`` change (a new model, new preprocessing): both are composed here. The publish step
also waits for the blocking audits of its parents, because a failed blocking check does not stop
later automation on its own.
"""

import dagster as dg

DOWNSTREAM = dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed().since_last_handled()

# The fine-tuned model exists only once someone trains it: its embeddings being missing must not
# hold back publishing the other families (eager() waits while any dependency is missing).
_OPTIONAL_FOR_PUBLISH = dg.AssetSelection.assets("finetuned_embeddings")

PUBLISH = (
    dg.AutomationCondition.eager().replace(
        "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(_OPTIONAL_FOR_PUBLISH))
    | dg.AutomationCondition.code_version_changed().since_last_handled()
) & dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(_OPTIONAL_FOR_PUBLISH)

# Likewise the antler keypoint model: antler_features run (on the annotations alone) before any is trained.
ANTLER_FEATURES = (
    dg.AutomationCondition.eager().replace(
        "any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets("antler_detector")))
    | dg.AutomationCondition.code_version_changed().since_last_handled()
)

# Uploads: the job `ingest_upload` carries each batch from its photos to its assignments itself
# (defs/upload.py: the published versions, the current profiles). A new camera_images partition
# therefore requests `detections` (and with it the whole chain) only while `detections` has never
# been materialized, i.e. on a fresh install before the first run of the graph; afterwards an upload
# recomputes nothing of the collection. A new code version still recomputes it.
FROM_UPLOADS = (
    (dg.AutomationCondition.newly_missing()
     | (dg.AutomationCondition.any_deps_updated() & dg.AutomationCondition.missing())).since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
) | dg.AutomationCondition.code_version_changed().since_last_handled()

# The evaluation and the report are off the upload path: once a night (03:00 UTC), when their code
# changes, or on demand (the UI, `deer-reid report` / `evaluate`); never after an upload or a
# matching run. They wait while something above them is running.
NIGHTLY_CRON = "0 3 * * *"
NIGHTLY = (
    (dg.AutomationCondition.cron_tick_passed(NIGHTLY_CRON) | dg.AutomationCondition.code_version_changed())
    .since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label(f"nightly ({NIGHTLY_CRON} UTC) or new code version")

automation_sensor = dg.AutomationConditionSensorDefinition(
    "deer_reid_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Every 15 s: recomputes what a new model version or code version made stale (uploads are carried "
    "by their own job, ingest_upload); requests reid_evaluation and embedding_report once a night.",
)
