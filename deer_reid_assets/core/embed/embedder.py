"""The embedder of a pretrained family: backbone + preprocessing + fitted projection, crops in,
``(N, EMBEDDING_DIM)`` L2-normalised float32 vectors out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deer_reid_assets.core.embed.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from deer_reid_assets.core.embed.device import resolve_device
from deer_reid_assets.core.embed.projection import FeatureProjection
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
        backbone, self.weights = build_backbone(family, weights, seed=seed)
        self.backbone = backbone.to(self.device)
        if self.device.startswith("cuda"):
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.projection: FeatureProjection | None = None
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @property
    def raw_dim(self) -> int:
        return get_family(self.family).raw_dim

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB, direct resize to ``image_size`` square (bilinear), ImageNet normalisation -> (N,3,S,S)."""
        size = (self.image_size, self.image_size)
        rgb = (im if im.mode == "RGB" else im.convert("RGB") for im in images)
        arrays = [np.asarray(im.resize(size, Image.Resampling.BILINEAR)) for im in rgb]
        if not arrays:
            return torch.empty((0, 3, *size))
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self._mean) / self._std

    def raw_features(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Pooled backbone features ``(N, raw_dim)`` float32, one forward pass per ``batch_size`` images."""
        cuda = self.device.startswith("cuda")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                x = self.preprocess(images[start : start + self.batch_size])
                if cuda:
                    x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    with torch.autocast("cuda", dtype=torch.float16):
                        feats = self.backbone(x)
                else:
                    feats = self.backbone(x)
                out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, self.raw_dim), dtype=np.float32)

    def fit_projection(self, raw: np.ndarray) -> FeatureProjection:
        """Fit (seeded with ``self.seed``) and set ``self.projection`` from raw features."""
        shape = np.shape(raw)
        if shape[1:] != (self.raw_dim,):
            raise ValueError(f"{self.family} raw features are (N, {self.raw_dim}), got {shape}")
        self.projection = FeatureProjection.fit(raw, seed=self.seed)
        return self.projection

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, EMBEDDING_DIM)`` float32 unit vectors; needs ``projection`` (fit or load it first)."""
        if self.projection is None:
            raise RuntimeError("Embedder.embed needs a projection: call fit_projection(raw) or set .projection")
        if self.projection.in_dim != self.raw_dim:
            raise ValueError(
                f"projection expects {self.projection.in_dim}-d raw features, {self.family} gives {self.raw_dim}"
            )
        return self.projection.transform(self.raw_features(images))

    def version_key(self) -> dict:
        """What determines the embeddings; ``projection`` is ``None`` until one is fitted or set."""
        return {
            "family": self.family,
            "weights_id": self.weights.weights_id,
            "projection": self.projection.fingerprint() if self.projection is not None else None,
            "image_size": self.image_size,
            "code_version": MODEL_CODE_VERSION,
        }
