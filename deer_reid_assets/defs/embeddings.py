"""Embedding assets: one per model family, each a versioned embedding set of every usable crop."""

import dagster as dg
from pydantic import Field

from deer_reid_assets.core import embeddings as emb_core

from .common import OWNERS, progress_logger
from .ingest import crops
from .resources import ComputeResource, DatabaseResource, ImageStoreResource, ModelWeightsResource

GROUP = "embeddings"

class EmbeddingConfig(dg.Config):
    refit_projection: bool = Field(
        default=False, description="Fit a new projection (a new version) instead of reusing the model's current one."
    )
    projection_sample: int = Field(default=1500, description="Crops sampled (seeded) to fit the PCA projection.")
    chunk: int = Field(default=128, description="Crops embedded and committed per chunk (resume granularity).")

def embedding_asset(name: str, family: str, description: str, code_version: str = "1") -> dg.AssetsDefinition:
    """An asset that embeds every usable crop with ``family`` and publishes the complete set."""

    @dg.asset(
        name=name,
        deps=[crops],
        group_name=GROUP,
        kinds={"pytorch", "postgres"},
        owners=OWNERS,
        code_version=code_version,
        pool="gpu",
        description=description,
    )
    def _embed(context: dg.AssetExecutionContext, config: EmbeddingConfig, database: DatabaseResource,
               image_store: ImageStoreResource, compute: ComputeResource,
               model_weights: ModelWeightsResource) -> dg.MaterializeResult:
        from deer_reid_assets.core.models import Embedder

        engine = database.get_engine()
        embedder = Embedder(family, model_weights.weights, seed=model_weights.seed, image_size=model_weights.image_size,
                            device=compute.resolve(), batch_size=compute.batch_size)
        context.log.info(f"weights: {embedder.weights.description}")
        report = emb_core.embed_crops(
            engine, embedder, artifacts=image_store.artifacts, sample_size=config.projection_sample,
            seed=model_weights.seed, chunk=config.chunk, refit=config.refit_projection,
            progress=progress_logger(context, f"{name}"),
        )
        previous = emb_core.publish(engine, report.version)
        if previous == report.version:
            context.log.info(f"{name}: {report.version} stays published ({report.new_vectors} new vectors)")
        else:
            context.log.info(f"{name}: published {report.version} (replacing {previous or 'nothing'})")
        return dg.MaterializeResult(metadata={
            "version": report.version,
            "weights": embedder.weights.description,
            "weights_source": embedder.weights.source,
            "device": embedder.device,
            "image_size": model_weights.image_size,
            "new_vectors": report.new_vectors,
            "total_vectors": report.total_vectors,
            "resumed": report.resumed,
            "projection_fitted_now": report.projection_fitted,
            "replaced_version": previous or "none",
            "seconds": round(report.seconds, 2),
            "ms_per_new_detection": round(report.per_detection_ms, 2),
            "model_forward_seconds": round(report.raw_forward_seconds, 2),
        })

    return _embed

baseline_embeddings = embedding_asset(
    "baseline_embeddings",
    "resnet50",
    "The existing system's model: ResNet50, global-average-pooled final layer (2048) -> 512 by a PCA projection "
    "fitted on a seeded sample of the crops (a versioned artefact), L2-normalised. One vector per usable crop, "
    "stored under an embedding version that names model, weights, projection and image size; published when complete.",
)

multiscale_embeddings = embedding_asset(
    "multiscale_embeddings",
    "multiscale",
    "Multi-scale ResNet50: features after layers 1-4 (256+512+1024+2048 channels) from ONE forward pass, each "
    "adaptive-average-pooled and concatenated (3840) -> 512 by a PCA projection fitted on a seeded sample of the "
    "crops (a fixed, saved, fingerprinted artefact; not learned), L2-normalised. Profiles go to "
    "deer.feature_vector_multiscale.",
)

efficientnet_embeddings = embedding_asset(
    "efficientnet_embeddings",
    "efficientnet",
    "EfficientNet-B0 (efficientnet_pytorch: from_pretrained weights when cached, else from_name with seeded init, "
    "or a checkpoint), pooled features (1280) -> 512 by a fitted PCA projection (saved artefact), L2-normalised. "
    "Profiles go to deer.feature_vector_efficientnet.",
)
