"""Images for training and embedding: sources, transforms, datasets, batched embedding.

An image source is a file path (decoded with :func:`imaging.load_image`), a PIL image, or a
zero-argument callable returning a PIL image.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from deer_reid_assets.core.embed.backbones import IMAGENET_MEAN, IMAGENET_STD
from deer_reid_assets.core.embed.device import resolve_device
from deer_reid_assets.core.ingest.imaging import load_image

ImageSource = Path | str | Image.Image | Callable[[], Image.Image]


def train_augmentations(image_size: int, *, flip: bool = False, erasing: float = 0.5) -> v2.Compose:
    """PIL image -> normalised ``(3, S, S)`` with training augmentation: square resize (as at
    inference), a small random translation (edge padding + random crop), colour jitter, random
    greyscale (night infrared shots), random erasing (occlusion by vegetation); a horizontal flip only
    when ``flip`` (off by default: a flipped left flank is a fake right flank)."""
    pad = max(2, image_size // 16)
    steps = [v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)]
    if flip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    steps += [
        v2.Pad(pad, padding_mode="edge"),
        v2.RandomCrop(image_size),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.25, hue=0.03),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    if erasing > 0:
        steps.append(v2.RandomErasing(p=erasing, scale=(0.02, 0.25), value=0))
    return v2.Compose(steps)


def eval_transform(image_size: int) -> v2.Compose:
    """PIL image -> ``(3, S, S)``: square resize (bilinear, antialiased), ImageNet normalisation."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def open_image(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (str, os.PathLike)):
        image = load_image(Path(source))
    elif callable(source):
        image = source()
        if not isinstance(image, Image.Image):
            raise TypeError(f"image loader {source!r} returned {type(image).__name__}, not a PIL image")
    else:
        raise TypeError(f"an image must be a path, a PIL image or a loader; got {type(source).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


class Images(Dataset):
    """``(transform(image), label)`` pairs. With ``cache_size`` each image is decoded once and kept
    resized to ``cache_size`` (the sets trained on here are small; decoding dominates on a CPU)."""

    def __init__(self, sources: Sequence[ImageSource], labels: Sequence[int], transform: Callable,
                 cache_size: int | None = None) -> None:
        self.sources, self.labels, self.transform = list(sources), list(labels), transform
        self.cache_size = cache_size
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.cache_size is None:
            return self.transform(open_image(self.sources[index])), self.labels[index]
        image = self._cache.get(index)
        if image is None:
            image = open_image(self.sources[index]).resize((self.cache_size, self.cache_size), Image.BILINEAR)
            self._cache[index] = image
        return self.transform(image), self.labels[index]


def unzip(items: Sequence[tuple[ImageSource, str]], name: str) -> tuple[list[ImageSource], list[str]]:
    """``[(image, identity), ...]`` -> (images, identities), with a one-line error for a bad item."""
    sources, identities = [], []
    for i, item in enumerate(items):
        try:
            source, identity = item
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}] must be an (image, identity) pair; got {item!r}") from None
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"{name}[{i}]: identity must be a non-empty string; got {identity!r}")
        sources.append(source)
        identities.append(identity)
    return sources, identities


def fingerprint(*groups: tuple[Sequence[ImageSource], Sequence[str]]) -> str:
    """Hash of the item lists (paths and identities; in-memory images count by position only)."""
    digest = hashlib.sha256()
    for sources, identities in groups:
        rows = [[str(s) if isinstance(s, (str, os.PathLike)) else type(s).__name__, ident]
                for s, ident in zip(sources, identities)]
        digest.update(json.dumps(rows).encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def autocast_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def embed_dataset(model: nn.Module, dataset: Dataset, device: str, batch_size: int = 64, num_workers: int = 0,
                  amp: bool = True) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of a dataset of ``(tensor, label)`` in eval mode."""
    cuda = device.startswith("cuda")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=cuda)
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for x, _ in loader:
                x = x.to(device, non_blocking=True)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=autocast_dtype() if cuda else torch.bfloat16, enabled=cuda and amp):
                    emb = model(x)
                out.append(F.normalize(emb.float(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.empty((0, getattr(model, "dim", 0)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def embed_images(model: nn.Module, images: Sequence[ImageSource], image_size: int, device: str = "cpu",
                 batch_size: int = 32) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of images (paths, PIL images or loaders), eval mode,
    :func:`eval_transform`. The model is moved to ``device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    dev = resolve_device(device)
    model.to(dev)
    dataset = Images(list(images), [0] * len(images), eval_transform(image_size))
    return embed_dataset(model, dataset, dev, batch_size)
