"""The model families: the one registry every layer reads (store, embed, matching, assets, CLI).

A *family* is one way of turning a crop into a 512-d unit vector. Each has a name (stored in
``reid_embedding_versions.model_family``), the short code its version names start with, the
deer-table column its published profiles are mirrored onto, the Dagster asset that embeds with it,
the size of its raw pooled features and how its embedder is built. Adding a family means adding one
entry here (plus its backbone in ``core/embed/trunks.py`` when it is a pretrained one).

Light on purpose: importing this module imports neither torch nor the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

EMBEDDING_DIM = 512  # every family's stored vectors (and the pgvector columns) have this many dimensions


@dataclass(frozen=True)
class EmbedderSettings:
    """How to build an embedder: the same settings from the assets' resources and from the CLI."""

    weights: str | Path = "auto"
    seed: int = 0
    image_size: int = 224
    device: str = "cpu"
    batch_size: int = 32
    loader_workers: int | None = None  # None: none on a CPU, several on a GPU (core.embed.loading)


def _pretrained_embedder(family: Family, engine: sa.Engine | None, settings: EmbedderSettings) -> Any:
    from deer_reid_assets.core.embed.embedder import Embedder

    return Embedder(family.name, settings.weights, seed=settings.seed, image_size=settings.image_size,
                    device=settings.device, batch_size=settings.batch_size, loader_workers=settings.loader_workers)


class NoUsableModel(ValueError):
    """A trained family has no model to embed with: none trained yet, or the guard marked it collapsed."""


def _finetuned_embedder(family: Family, engine: sa.Engine | None, settings: EmbedderSettings) -> Any:
    from deer_reid_assets.core.embed.finetuned import FinetunedEmbedder
    from deer_reid_assets.core.store.reid_models import latest_model

    model = latest_model(engine) if engine is not None else None
    if model is None:
        raise NoUsableModel("no usable fine-tuned model: materialize finetuned_reid_model first (deer-reid train); "
                         "a collapsed model is never used")
    return FinetunedEmbedder(model["checkpoint_path"], device=settings.device, batch_size=settings.batch_size,
                             loader_workers=settings.loader_workers)


@dataclass(frozen=True)
class Family:
    name: str  # stored in reid_embedding_versions.model_family
    label: str  # what a person calls it (CLI `evaluate --model`, report rows)
    code: str  # prefix of its version names, e.g. 'ms-1a2b3c4d5e'
    asset: str  # the Dagster asset that embeds every usable crop with it
    deer_column: str  # the deer-table column its published profile vectors are mirrored onto
    raw_dim: int  # pooled features before the projection to EMBEDDING_DIM
    pretrained: bool  # a backbone built from weights ('auto'/'imagenet'/'random'/path), not a trained model
    ab_test: bool  # published only if it beats what the matcher uses now, on the test queries
    loader: Callable[[Family, Any, EmbedderSettings], Any]

    def embedder(self, engine: sa.Engine | None = None, settings: EmbedderSettings | None = None) -> Any:
        """This family's embedder (``engine`` is needed to find a trained model)."""
        return self.loader(self, engine, settings or EmbedderSettings())


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("resnet50", "baseline", "r50", "baseline_embeddings", "feature_vector", 2048, pretrained=True,
           ab_test=False, loader=_pretrained_embedder),
    Family("multiscale", "multiscale", "ms", "multiscale_embeddings", "feature_vector_multiscale", 3840,
           pretrained=True, ab_test=False, loader=_pretrained_embedder),
    Family("efficientnet", "efficientnet", "effb0", "efficientnet_embeddings", "feature_vector_efficientnet", 1280,
           pretrained=True, ab_test=False, loader=_pretrained_embedder),
    Family("finetuned", "finetuned", "ft", "finetuned_embeddings", "feature_vector_finetuned", EMBEDDING_DIM,
           pretrained=False, ab_test=True, loader=_finetuned_embedder),
)}

BASELINE = "resnet50"  # the existing system's model: the reference of every comparison
FINETUNED = "finetuned"  # the deer-specific model trained on this project's labels
ENSEMBLE = ("multiscale", "efficientnet")  # the ensemble's two members, in weight order (w, 1 - w)
PRETRAINED = tuple(name for name, f in FAMILIES.items() if f.pretrained)


def get(name: str) -> Family:
    """The family called ``name``; a ValueError that lists the valid names otherwise."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}") from None


def by_label(label: str) -> Family:
    for family in FAMILIES.values():
        if family.label == label:
            return family
    raise ValueError(f"unknown model {label!r}: choose one of {', '.join(f.label for f in FAMILIES.values())}")


def by_asset(asset: str) -> Family:
    for family in FAMILIES.values():
        if family.asset == asset:
            return family
    raise ValueError(f"no model family is embedded by asset {asset!r}")
