"""Helpers shared by the tests (fixtures live in conftest.py)."""

import dagster as dg


def run_pipeline(resources: dict, *, instance: dg.DagsterInstance | None = None, assets: list | None = None,
                 partition: str = "test-batch", **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize the asset graph (or ``assets``) the way the demo does: camera_images as one
    upload-batch partition, everything downstream unpartitioned, the audits included."""
    from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from deer_reid_assets.defs.ingest import upload_batches

    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(upload_batches.name, [partition])
    return dg.materialize(assets or [*ALL_ASSETS, *ALL_CHECKS], resources=resources, instance=instance,
                          partition_key=partition, **kwargs)
