"""Declarative automation: what recomputes when something upstream changes.

``eager()`` alone requests an asset when a parent is materialized again, but does not react to a
``code_version`` change (a new model, new preprocessing): both are composed here. The publish step
also waits for the blocking audits of its parents, because a failed blocking check does not stop
later automation on its own.
"""

import dagster as dg

DOWNSTREAM = dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed().since_last_handled()

PUBLISH = (
    dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed().since_last_handled()
) & dg.AutomationCondition.all_deps_blocking_checks_passed()

automation_sensor = dg.AutomationConditionSensorDefinition(
    "deer_reid_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Recomputes stale assets (new uploads, a new model version or code version) every 15 s.",
)
