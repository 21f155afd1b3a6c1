"""The embedder of a pretrained family: backbone + preprocessing + fitted projection, crops in,
``(N, EMBEDDING_DIM)`` L2-normalised float32 vectors out."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deer_reid_assets.core.embed import shared_trunk
from deer_reid_assets.core.embed.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from deer_reid_assets.core.embed.device import cpu_has_bf16_units, resolve_device
from deer_reid_assets.core.embed.loading import file_batches, uint8_batch
from deer_reid_assets.core.embed.projection import FeatureProjection
from deer_reid_assets.core.families import EMBEDDING_DIM
from deer_reid_assets.core.families import get as get_family

MODEL_CODE_VERSION = "1"  # bump when preprocessing/architecture code changes


class Embedder:
    """Backbone + preprocessing + fitted projection. ``backbone`` is public (e.g. to hook ``conv1``)."""

    def __init__(
        self,
        family: str,
        weights: str | Path = "auto",
        *,
        seed: int = 0,
        image_size: int = 224,
        device: str = "cpu",
        batch_size: int = 32,
        loader_workers: int | None = None,
    ) -> None:
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 px, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.family = family
        self.seed = seed
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self.loader_workers = loader_workers  # None: loading.default_workers(device)
        backbone, self.weights = build_backbone(family, weights, seed=seed)
        self.backbone = backbone.to(self.device)
        if self.device.startswith("cuda"):
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        # the forward pass's arithmetic: fp16 autocast on a GPU, bf16 autocast on a CPU with bf16 units
        # (1.6x faster there; features agree with fp32 to a cosine >= 0.9998), fp32 elsewhere
        self.precision = "fp16" if self.device.startswith("cuda") else "bf16" if cpu_has_bf16_units() else "fp32"
        self.projection: FeatureProjection | None = None
        # the two ResNet50 families share one forward pass per crop file (core/embed/shared_trunk.py)
        self.trunk_key = None
        if family in shared_trunk.RESNET_FAMILIES:
            self.trunk_key = ("resnet50", self.weights.weights_id, image_size, self.precision, self.device)
        self.memo = shared_trunk.MEMO
        self.shared_crops = 0  # crops whose stages this embedder took from the other family's pass
        # on the model's device once: a per-batch copy of pageable memory would stall the CUDA stream
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1).to(self.device)

    @property
    def raw_dim(self) -> int:
        return get_family(self.family).raw_dim

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB, direct resize to ``image_size`` square (bilinear), ImageNet normalisation -> (N,3,S,S)."""
        return self._normalise(uint8_batch(images, self.image_size))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N,3,S,S)`` -> normalised float on the model's device."""
        if x.device != self._mean.device:
            x = x.to(self._mean.device)
        return (x.float().div_(255.0) - self._mean) / self._std

    def _forward(self, x: torch.Tensor, stages: bool = False) -> torch.Tensor:
        """Pooled features of a uint8 batch, left on the device (float32); with ``stages`` the pools of
        all four ResNet50 stages. On CUDA the copy is asynchronous (the batch is pinned) and the
        normalisation runs on the GPU."""
        model = self.backbone.pooled_stages if stages else self.backbone
        if self.device.startswith("cuda"):
            x = self._normalise(x.to(self.device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16):
                return model(x).float()
        x = self._normalise(x)
        if self.precision == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x).float()
        return model(x)

    def _stream(self, batches: Iterable[torch.Tensor], stages: bool = False) -> Iterator[np.ndarray]:
        """Features per batch, one batch behind: batch i's result is copied back to the host after
        batch i+1 was queued, so on a GPU the copy-back never leaves the device idle."""
        pending = None
        for x in batches:
            with torch.inference_mode():  # per batch: the mode must not leak into the caller between yields
                feats = self._forward(x, stages)
            if pending is not None:
                yield pending.cpu().numpy()
            pending = feats
        if pending is not None:
            yield pending.cpu().numpy()

    def _collect(self, parts: Iterable[np.ndarray]) -> np.ndarray:
        out = list(parts)
        return np.concatenate(out) if out else np.empty((0, self.raw_dim), dtype=np.float32)

    def raw_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Pooled backbone features ``(N, raw_dim)`` float32 of in-memory images, ``batch_size`` at a time."""
        size = self.image_size
        batches = (uint8_batch(images[i : i + self.batch_size], size) for i in range(0, len(images), self.batch_size))
        return self._collect(self._stream(batches))

    def raw_feature_batches(self, paths: Sequence[Path | str], workers: int | None = None) -> Iterator[np.ndarray]:
        """Pooled features of crop files, one array per ``batch_size`` files in order; the files are
        decoded and resized in ``workers`` loader processes (default: none on a CPU, several on a GPU).
        A ResNet50 family takes the files the other one already ran through the same trunk from
        :data:`shared_trunk.MEMO` and keeps what it computes there for the other."""
        workers = self.loader_workers if workers is None else workers
        if self.trunk_key is None or self.memo.max_bytes == 0:
            return self._stream(file_batches(paths, self.image_size, self.batch_size, device=self.device,
                                             workers=workers))
        return self._shared_batches(list(paths), workers)

    def _shared_batches(self, paths: list[Path | str], workers: int | None) -> Iterator[np.ndarray]:
        files = [shared_trunk.file_key(p) for p in paths]
        kept = {i: s for i, f in enumerate(files) if (s := self.memo.take(self.trunk_key, f, self.family)) is not None}
        self.shared_crops += len(kept)
        missing = [p for i, p in enumerate(paths) if i not in kept]
        computed = self._stream(file_batches(missing, self.image_size, self.batch_size, device=self.device,
                                             workers=workers), stages=True)
        rows_left: deque[np.ndarray] = deque()
        columns = shared_trunk.family_columns(self.family)
        for start in range(0, len(paths), self.batch_size):
            rows = []
            for i in range(start, min(start + self.batch_size, len(paths))):
                stages = kept.pop(i, None)
                if stages is None:
                    while not rows_left:
                        rows_left.extend(next(computed))
                    stages = rows_left.popleft()
                    self.memo.put(self.trunk_key, files[i], self.family, stages)
                rows.append(stages)
            yield np.ascontiguousarray(np.stack(rows)[:, columns])

    def raw_features_files(self, paths: Sequence[Path | str], workers: int | None = None) -> np.ndarray:
        return self._collect(self.raw_feature_batches(paths, workers))

    def embed_files(self, paths: Sequence[Path | str]) -> np.ndarray:
        """``(N, EMBEDDING_DIM)`` unit vectors of crop files (needs ``projection``)."""
        return np.concatenate(list(self.embed_batches(paths))) if len(paths) else np.empty((0, EMBEDDING_DIM), np.float32)

    def embed_batches(self, paths: Sequence[Path | str]) -> Iterator[np.ndarray]:
        """Unit vectors of crop files, one array per batch (needs ``projection``)."""
        projection = self._projection()
        for raw in self.raw_feature_batches(paths):
            yield projection.transform(raw)

    def fit_projection(self, raw: np.ndarray) -> FeatureProjection:
        """Fit (seeded with ``self.seed``) and set ``self.projection`` from raw features."""
        shape = np.shape(raw)
        if shape[1:] != (self.raw_dim,):
            raise ValueError(f"{self.family} raw features are (N, {self.raw_dim}), got {shape}")
        self.projection = FeatureProjection.fit(raw, seed=self.seed)
        return self.projection

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, EMBEDDING_DIM)`` float32 unit vectors; needs ``projection`` (fit or load it first)."""
        return self._projection().transform(self.raw_features(images))

    def _projection(self) -> FeatureProjection:
        if self.projection is None:
            raise RuntimeError("Embedder.embed needs a projection: call fit_projection(raw) or set .projection")
        if self.projection.in_dim != self.raw_dim:
            raise ValueError(
                f"projection expects {self.projection.in_dim}-d raw features, {self.family} gives {self.raw_dim}"
            )
        return self.projection

    def version_key(self) -> dict:
        """What determines the embeddings; ``projection`` is ``None`` until one is fitted or set."""
        return {
            "family": self.family,
            "weights_id": self.weights.weights_id,
            "projection": self.projection.fingerprint() if self.projection is not None else None,
            "image_size": self.image_size,
            "code_version": MODEL_CODE_VERSION,
        }
