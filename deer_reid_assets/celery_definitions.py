"""The deer-reid code location with its steps on Celery workers (Redis broker): ``defs``.

The same assets, checks, jobs, sensors and resources as ``deer_reid_assets.definitions``, only the
executor differs: each step becomes a Celery task. GPU steps carry ``dagster-celery/queue: gpu``
(derived from their pool in ``defs/placement.py``) and go to the ``gpu`` queue, which one worker on
the GPU machine serves; every other step goes to the default queue ``dagster``. The broker and the
result backend are read from DEER_REID_CELERY_BROKER / DEER_REID_CELERY_BACKEND when a run starts, and
the workers take them from deploy/celery/celery.yaml (the same variables). See deploy/celery/ and the
README's "Running on several workers".
"""

from __future__ import annotations

import dagster as dg
from dagster_celery import celery_executor

from deer_reid_assets import definitions

BROKER_ENV = "DEER_REID_CELERY_BROKER"
BACKEND_ENV = "DEER_REID_CELERY_BACKEND"

executor = celery_executor.configured(
    {"broker": {"env": BROKER_ENV}, "backend": {"env": BACKEND_ENV}},
    name="celery_redis",
)

# One Definitions object at module scope (what `-m deer_reid_assets.celery_definitions` loads).
defs = dg.Definitions.merge(definitions.defs, dg.Definitions(executor=executor))
