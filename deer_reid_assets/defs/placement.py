"""Where a step runs, derived from its concurrency pool, in this one place for every executor.

A GPU asset declares ``@dg.asset(**gpu_step(), ...)``: the pool ``gpu`` (at most one GPU step at a time,
see deploy/dagster.yaml) plus the op tags that follow from it:

* ``dagster-celery/queue: gpu``: the Celery executor sends the step to the ``gpu`` queue, which one
  worker on the GPU machine serves (``-q gpu``); every other step goes to the default queue ``dagster``;
* ``dagster-k8s/config``: the Kubernetes job executor gives the step's pod one ``nvidia.com/gpu`` and
  the toleration of GPU nodes' taint.

The in-process and multiprocess executors ignore both tags, so the graph behaves as before.
No Celery or Kubernetes package is imported here: the tags are plain strings.
"""

from __future__ import annotations

import json

GPU_POOL = "gpu"

CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY
CELERY_DEFAULT_QUEUE = "dagster"  # dagster-celery's task_default_queue: where untagged steps go

# Celery queue and Kubernetes pod settings of each pool; a step of a pool not listed runs anywhere.
QUEUES = {GPU_POOL: "gpu"}
K8S_CONFIG = {
    GPU_POOL: {
        # one card (added to the executor's step_k8s_config: CPU and memory come from there)
        "container_config": {"resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}},
        # GPU nodes are commonly tainted so that only pods that want a GPU land there
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    },
}


def step_tags(pool: str | None) -> dict[str, str]:
    """The op tags that place a step of ``pool``: its Celery queue and its pod's resources."""
    tags: dict[str, str] = {}
    if pool in QUEUES:
        tags[CELERY_QUEUE_TAG] = QUEUES[pool]
    if pool in K8S_CONFIG:
        tags[K8S_CONFIG_TAG] = json.dumps(K8S_CONFIG[pool], sort_keys=True)
    return tags


def queue_of(pool: str | None) -> str:
    """The Celery queue a step of ``pool`` is sent to."""
    return QUEUES.get(pool or "", CELERY_DEFAULT_QUEUE)


def gpu_step() -> dict:
    """Keyword arguments of ``@dg.asset`` for a GPU step: the pool and the tags derived from it."""
    return {"pool": GPU_POOL, "op_tags": step_tags(GPU_POOL)}
