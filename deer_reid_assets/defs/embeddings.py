"""Embedding assets, write-audit-publish.

* **write**: one asset per model family embeds every usable crop into a versioned set (staging until
  complete; new crops are added to the current version, a new model/weights/projection makes a new
  version; old versions are kept);
* **audit**: a blocking asset check per family compares that version with the published one;
* **publish**: ``published_embeddings`` moves the published pointers, all families in one
  transaction, only for versions whose audit passed. Everything downstream reads published versions.
"""

import dagster as dg
import pandas as pd
from pydantic import Field

from deer_reid_assets.core import audit as audit_core
from deer_reid_assets.core import families
from deer_reid_assets.core.embed import versions

from .automation import DOWNSTREAM, PUBLISH
from .common import OWNERS, core_errors, md_image, md_table, progress_logger
from .ingest import crops
from .placement import gpu_step
from .resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource

GROUP = "embeddings"


class EmbeddingConfig(dg.Config):
    refit_projection: bool = Field(
        default=False, description="Fit a new projection (a new version) instead of reusing the model's current one."
    )
    projection_sample: int = Field(default=1500, description="Crops sampled (seeded) to fit the PCA projection.")
    chunk: int = Field(default=128, description="Crops embedded and committed per chunk (resume granularity).")


class AuditConfig(dg.Config):
    tolerance: float = Field(default=0.02, description="Largest allowed drop in val rank-1, mAP, assignment rate.")
    threshold: float = Field(default=0.40)
    max_false_match_rate: float = Field(default=0.05)


def embedder_settings(compute: ComputeResource, model_weights: ModelWeightsResource) -> families.EmbedderSettings:
    return families.EmbedderSettings(weights=model_weights.weights, seed=model_weights.seed,
                                     image_size=model_weights.image_size, device=compute.resolve(),
                                     batch_size=compute.batch_size, loader_workers=compute.loader_workers)


def embedding_asset(family_name: str, description: str, code_version: str = "1", *, deps=(crops,),
                    ) -> tuple[dg.AssetsDefinition, dg.AssetChecksDefinition]:
    """The asset that embeds every usable crop with a family of the registry into a (staged)
    embedding version, and its blocking audit check."""
    family = families.get(family_name)
    name = family.asset

    @dg.asset(
        name=name,
        deps=list(deps),
        group_name=GROUP,
        kinds={"pytorch", "postgres"},
        owners=OWNERS,
        code_version=code_version,
        **gpu_step(),
        automation_condition=DOWNSTREAM,
        description=description,
    )
    def _embed(context: dg.AssetExecutionContext, config: EmbeddingConfig, database: DatabaseResource,
               image_store: ImageStoreResource, compute: ComputeResource,
               model_weights: ModelWeightsResource) -> dg.MaterializeResult:
        engine = database.get_engine()
        try:
            with core_errors():
                embedder = family.embedder(engine, embedder_settings(compute, model_weights))
        except dg.Failure as exc:
            if not isinstance(exc.__cause__, families.NoUsableModel):
                raise
            # A collapsed (or absent) trained model is not an error of this run: nothing is staged, the
            # audit says so, and the published versions stay as they are.
            context.log.warning(str(exc.__cause__))
            return dg.MaterializeResult(metadata={"version": "none", "skipped": str(exc.__cause__)})
        context.log.info(f"weights: {embedder.weights.description}; forward in {embedder.precision} on {embedder.device}")
        with compute.exclusive(engine):
            report = versions.embed_crops(
                engine, embedder, artifacts=image_store.artifacts, sample_size=config.projection_sample,
                seed=model_weights.seed, chunk=config.chunk, refit=config.refit_projection,
                progress=progress_logger(context, name),
            )
        shared = getattr(embedder, "shared_crops", 0)  # only the ResNet50 families share a pass
        if shared:
            context.log.info(f"{shared} crop(s) taken from the other ResNet50 family's forward pass (same trunk, same "
                             "weights): no second pass")
        return dg.MaterializeResult(metadata={
            "version": report.version,
            "crops_from_shared_resnet50_pass": shared,
            "weights": embedder.weights.description,
            "weights_source": embedder.weights.source,
            "device": embedder.device,
            "precision": embedder.precision,
            "image_size": embedder.image_size,
            "new_vectors": report.new_vectors,
            "total_vectors": report.total_vectors,
            "resumed": report.resumed,
            "projection_fitted_now": report.projection_fitted,
            "seconds": round(report.seconds, 2),
            "ms_per_new_detection": round(report.per_detection_ms, 2),
            "model_forward_seconds": round(report.raw_forward_seconds, 2),
        })

    @dg.asset_check(asset=_embed, name="audit", blocking=True,
                    description=f"Audit of the newest {family.name} version against the published one: complete, every "
                    "crop embedded, unit-norm vectors, no regression beyond the tolerance in val rank-1 / mAP / "
                    "assignment rate at the FMR budget; lists the assignments that would change.")
    def _audit(config: AuditConfig, database: DatabaseResource) -> dg.AssetCheckResult:
        engine = database.get_engine()
        with engine.connect() as conn:
            latest = versions.latest_version(conn, family.name)
        if latest is None and not family.pretrained:
            try:
                family.embedder(engine)
            except families.NoUsableModel as exc:
                return dg.AssetCheckResult(passed=True, description=f"nothing staged, nothing to publish: {exc}")
        if latest is None:
            return dg.AssetCheckResult(passed=False, description=f"no complete {family.name} version to audit")
        result = audit_core.audit_version(engine, latest.version, tolerance=config.tolerance,
                                          threshold=config.threshold, max_false_match_rate=config.max_false_match_rate)
        versions.record_audit(engine, latest.version, result.passed, result.to_json())
        metadata = {
            "version": latest.version,
            "published_version": result.against or "none",
            "audit": dg.MetadataValue.md(result.markdown()),
            "assignments_that_would_change": result.changed,
        }
        png = audit_core.sample_image(result.sample)
        if png:
            metadata["changed_assignments_sample"] = md_image(png, "detection | assigned now | would be")
        return dg.AssetCheckResult(passed=result.passed, metadata=metadata,
                                   severity=dg.AssetCheckSeverity.ERROR)

    return _embed, _audit


baseline_embeddings, baseline_audit = embedding_asset(
    "resnet50",
    "The existing system's model: ResNet50, global-average-pooled final layer (2048) -> 512 by a PCA projection "
    "fitted on a seeded sample of the crops (a versioned artefact), L2-normalised. One vector per usable crop, "
    "stored under an embedding version that names model, weights, projection and image size (staged until published).",
)

multiscale_embeddings, multiscale_audit = embedding_asset(
    "multiscale",
    "Multi-scale ResNet50: features after layers 1-4 (256+512+1024+2048 channels) from ONE forward pass, each "
    "adaptive-average-pooled and concatenated (3840) -> 512 by a PCA projection fitted on a seeded sample of the "
    "crops (a fixed, saved, fingerprinted artefact; not learned), L2-normalised. Profiles go to "
    "deer.feature_vector_multiscale.",
)

efficientnet_embeddings, efficientnet_audit = embedding_asset(
    "efficientnet",
    "EfficientNet-B0 (efficientnet_pytorch: from_pretrained weights when cached, else from_name with seeded init, "
    "or a checkpoint), pooled features (1280) -> 512 by a fitted PCA projection (saved artefact), L2-normalised. "
    "Profiles go to deer.feature_vector_efficientnet.",
)


finetuned_embeddings, finetuned_audit = embedding_asset(
    "finetuned",
    "The deer-specific ResNet50 trained with batch-hard triplet loss (finetuned_reid_model): its 512-d BN-neck "
    "embedding, L2-normalised, for every usable crop, as a staged version. Its audit adds an A/B test on the test "
    "queries: it is published only if it beats the configuration the matcher uses now (higher mAP, rank-1 not "
    "lower). Profiles go to deer.feature_vector_finetuned.",
    deps=(crops, dg.AssetKey("finetuned_reid_model")),
)

EMBEDDING_ASSETS = [baseline_embeddings, multiscale_embeddings, efficientnet_embeddings, finetuned_embeddings]
EMBEDDING_CHECKS = [baseline_audit, multiscale_audit, efficientnet_audit, finetuned_audit]


@dg.asset(
    deps=EMBEDDING_ASSETS,
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
    code_version="1",
    automation_condition=PUBLISH,
    description="The published embedding version of each model family. Moves every family whose newest version "
    "passed its audit onto that version, all in one transaction; a version that failed or was never audited is "
    "refused and the published one stays. Old versions are kept (`deer-reid embeddings rollback VERSION`).",
)
def published_embeddings(context: dg.AssetExecutionContext, database: DatabaseResource) -> dg.MaterializeResult:
    with core_errors():
        rows = versions.publish_passed(database.get_engine())
    changed = [r["published"] for r in rows if r["action"].startswith("published")]
    if changed:
        context.log.info(f"published {', '.join(changed)}")
    return dg.MaterializeResult(metadata=publish_metadata(rows))


def publish_metadata(rows: list[dict]) -> dict:
    """What published_embeddings records: also recorded by `deer-reid embeddings rollback`."""
    return {
        "published": dg.MetadataValue.json({r["family"]: r["published"] for r in rows}),
        "changed": sum(1 for r in rows if r["action"].startswith("published")),
        "publish": md_table(pd.DataFrame(rows)),
    }
