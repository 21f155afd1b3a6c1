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

automation_sensor = dg.AutomationConditionSensorDefinition(
    "deer_reid_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Recomputes stale assets (new uploads, a new model version or code version) every 15 s.",
)
