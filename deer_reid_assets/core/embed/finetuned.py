"""The fine-tuned (triplet) ReID model as an embedder, so its embedding sets go through the same
versioned write / audit / publish path as the other model families."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deer_reid_assets.core.embed.device import cpu_has_bf16_units, resolve_device
from deer_reid_assets.core.embed.embedder import Embedder
from deer_reid_assets.core.embed.loading import default_workers
from deer_reid_assets.core.embed.projection import FeatureProjection
from deer_reid_assets.core.families import EMBEDDING_DIM, FINETUNED
from deer_reid_assets.core.reid.data import Images, autocast_dtype, embed_dataset_batches, eval_transform
from deer_reid_assets.core.reid.training import embed_images, load_reid_model


def identity_projection(dim: int = EMBEDDING_DIM) -> FeatureProjection:
    """The model already outputs the 512-d embedding it was trained for: no projection, only the
    L2 normalisation that every family shares."""
    return FeatureProjection(np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32), np.ones(dim, np.float32), dim)


class FinetunedEmbedder:
    """Same interface as :class:`Embedder` for ``family = 'finetuned'``."""

    family = FINETUNED
    raw_dim = EMBEDDING_DIM

    def __init__(self, checkpoint: Path | str, *, device: str = "cpu", batch_size: int = 32,
                 loader_workers: int | None = None) -> None:
        self.loader_workers = loader_workers
        self.device = resolve_device(device)
        self.model, self.config = load_reid_model(Path(checkpoint), self.device)
        self.weights = self.model.weights
        self.image_size = int(self.config["image_size"])
        self.batch_size = batch_size
        self.projection: FeatureProjection | None = None
        # autocast on a GPU and on a CPU with bf16 units, as while training it was validated
        cuda = self.device.startswith("cuda")
        self.precision = (("bf16" if autocast_dtype() == torch.bfloat16 else "fp16") if cuda
                          else "bf16" if cpu_has_bf16_units() else "fp32")

    def raw_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        return embed_images(self.model, images, self.image_size, self.device, self.batch_size)

    def raw_features_files(self, paths: Sequence[Path | str], workers: int | None = None) -> np.ndarray:
        """Embeddings of crop files, decoded in loader workers on a GPU (none on a CPU)."""
        out = list(self._file_batches(paths, workers))
        return np.concatenate(out) if out else np.empty((0, self.raw_dim), np.float32)

    def _file_batches(self, paths: Sequence[Path | str], workers: int | None = None) -> Iterator[np.ndarray]:
        n_workers = workers if workers is not None else self.loader_workers
        n_workers = default_workers(self.device) if n_workers is None else n_workers
        dataset = Images(list(paths), [0] * len(paths), eval_transform(self.image_size))
        return embed_dataset_batches(self.model, dataset, self.device, self.batch_size, num_workers=n_workers)

    def embed_batches(self, paths: Sequence[Path | str]) -> Iterator[np.ndarray]:
        """Unit vectors of crop files, one array per batch from one loader (the caller writes as it goes)."""
        if self.projection is None:
            self.projection = identity_projection()
        for raw in self._file_batches(paths):
            yield self.projection.transform(raw)

    def embed_files(self, paths: Sequence[Path | str]) -> np.ndarray:
        if self.projection is None:
            self.projection = identity_projection()
        return self.projection.transform(self.raw_features_files(paths))

    def fit_projection(self, raw: np.ndarray) -> FeatureProjection:
        self.projection = identity_projection()
        return self.projection

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        if self.projection is None:
            self.projection = identity_projection()
        return self.projection.transform(self.raw_features(images))

    version_key = Embedder.version_key  # family, weights, projection, image size, code version
