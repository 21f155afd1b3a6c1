"""Helpers shared by the tests (fixtures live in conftest.py)."""

import dagster as dg


def run_pipeline(resources: dict, *, instance: dg.DagsterInstance | None = None, assets: list | None = None,
                 partition: str = "test-batch", train: bool = False, **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize the asset graph (or ``assets``) the way the demo does: camera_images as one
    upload-batch partition, everything downstream unpartitioned, the audits included, the training
    assets only with ``train``."""
    from deer_reid_assets.definitions import ALL_CHECKS, graph
    from deer_reid_assets.defs.ingest import upload_batches

    if assets is None:
        assets = graph(train=train)
        keys = {a.key for a in assets}
        assets += [c for c in ALL_CHECKS if all(k.asset_key in keys for k in c.check_keys)]
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(upload_batches.name, [partition])
    return dg.materialize(assets, resources=resources, instance=instance, partition_key=partition, **kwargs)
