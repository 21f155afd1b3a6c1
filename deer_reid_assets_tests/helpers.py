"""Helpers shared by the tests (fixtures live in conftest.py)."""

import dagster as dg


TRAINING = {"triplet_dataset", "finetuned_reid_model", "finetuned_embeddings"}


def run_pipeline(resources: dict, *, instance: dg.DagsterInstance | None = None, assets: list | None = None,
                 partition: str = "test-batch", train: bool = False, **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize the asset graph (or ``assets``) the way the demo does: camera_images as one
    upload-batch partition, everything downstream unpartitioned, the audits included, the training
    assets only with ``train``."""
    from deer_reid_assets.definitions import ALL_ASSETS, ALL_CHECKS
    from deer_reid_assets.defs.ingest import upload_batches

    if assets is None:
        keep = lambda key: train or key.to_user_string() not in TRAINING  # noqa: E731
        assets = [a for a in ALL_ASSETS if keep(a.key)]
        assets += [c for c in ALL_CHECKS if all(keep(k.asset_key) for k in c.check_keys)]
    instance = instance or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(upload_batches.name, [partition])
    return dg.materialize(assets, resources=resources, instance=instance, partition_key=partition, **kwargs)
