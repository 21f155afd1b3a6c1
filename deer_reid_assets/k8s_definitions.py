"""The deer-reid code location with each step in a Kubernetes pod of its own: ``defs``.

The same assets, checks, jobs, sensors and resources as ``deer_reid_assets.definitions``, with the
``k8s_job_executor``: under the K8sRunLauncher (deploy/k8s/dagster.yaml) a run's pod launches one Kubernetes
Job per step; a GPU step's pod requests one ``nvidia.com/gpu`` through the ``dagster-k8s/config`` tag that
``defs/placement.py`` derives from its pool. The executor's settings (deploy/k8s/run_config.yaml) are run
config, so each launch may set its own; without them steps take the run launcher's settings.
"""

from __future__ import annotations

import dagster as dg
from dagster_k8s import k8s_job_executor

from deer_reid_assets import definitions

# One Definitions object at module scope (what `-m deer_reid_assets.k8s_definitions` loads).
defs = dg.Definitions.merge(definitions.defs, dg.Definitions(executor=k8s_job_executor))
