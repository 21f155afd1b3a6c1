"""Images for training and embedding: sources, transforms, datasets, batched embedding.

An image source is a file path (decoded with :func:`imaging.load_image`), a PIL image, or a
zero-argument callable returning a PIL image.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deer_reid_assets.core.embed.backbones import IMAGENET_MEAN, IMAGENET_STD
from deer_reid_assets.core.embed.device import cpu_has_bf16_units, resolve_device
from deer_reid_assets.core.ingest.imaging import load_image

ImageSource = Path | str | Image.Image | Callable[[], Image.Image]


class SquareTensor:
    """PIL image -> ``(3, S, S)`` float in [0, 1]: a square resize (bilinear, antialiased, on the uint8
    pixels, as torchvision's ``v2.Resize`` does them), then, when ``flip``, a horizontal flip with
    probability 0.5 (torch's RNG), and ImageNet normalisation when ``normalise``. Plain torch: no
    torchvision import (it costs about 3 s per process, see ``core/embed/resnet.py``)."""

    def __init__(self, image_size: int, *, flip: bool = False, normalise: bool = False) -> None:
        self.size, self.flip, self.normalise = image_size, flip, normalise
        self.mean, self.std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.array(image.convert("RGB") if image.mode != "RGB" else image)).permute(2, 0, 1)
        if tuple(x.shape[1:]) != (self.size, self.size):
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        if self.flip and bool(torch.rand(1) < 0.5):
            x = x.flip(-1)
        x = x.float().div_(255.0)
        if self.normalise:
            x = (x - self.mean) / self.std
        return x


def train_augmentations(image_size: int, *, flip: bool = False) -> SquareTensor:
    """PIL image -> ``(3, S, S)`` float in [0, 1]: the per-image part of training augmentation, a
    square resize (as at inference) and a horizontal flip only when ``flip`` (off by default: a flipped
    left flank is a fake right flank). The rest runs on whole batches: :class:`BatchAugment`."""
    return SquareTensor(image_size, flip=flip)


# YIQ: a hue shift is a rotation of the (I, Q) chroma plane, one 3 x 3 matrix per image.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)
_GREY = torch.tensor([0.299, 0.587, 0.114])


class BatchAugment:
    """Training augmentation of a ``(B, 3, S, S)`` batch in [0, 1], with its own random draw per image
    (torch's global RNG, seeded per epoch by the trainer): a small random translation (edge padding of
    S/16 and a random S x S crop), brightness and
    contrast (x0.7-1.3), saturation (x0.75-1.25), a hue shift of up to 0.03 turn (a chroma rotation in
    YIQ), greyscale with probability 0.2 (night infrared shots), ImageNet normalisation, then random
    erasing (occlusion by vegetation: a rectangle of 2-25% of the image, aspect 0.3-3.3, set to 0) with
    probability ``erasing``. Done per batch: per image (torchvision's transforms on each PIL image) it
    cost about as much as the model's training step on a CPU, the hue conversion alone 3 ms an image."""

    def __init__(self, erasing: float = 0.5) -> None:
        self.erasing = erasing

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, dev = x.shape[0], x.device
        x = self._translate(x)

        def factor(low: float, high: float) -> torch.Tensor:
            return torch.empty(n, 1, 1, 1).uniform_(low, high).to(dev)

        grey_w = _GREY.to(dev).view(1, 3, 1, 1)
        x = (x * factor(0.7, 1.3)).clamp_(0, 1)  # brightness
        mean = (x * grey_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = ((x - mean) * factor(0.7, 1.3) + mean).clamp_(0, 1)  # contrast
        grey = (x * grey_w).sum(1, keepdim=True)
        x = ((x - grey) * factor(0.75, 1.25) + grey).clamp_(0, 1)  # saturation
        angle = torch.empty(n).uniform_(-0.03, 0.03) * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.zeros(n, 3, 3)
        rotation[:, 0, 0] = 1
        rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
        hue = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).to(dev)  # (n, 3, 3)
        x = torch.bmm(hue, x.reshape(n, 3, -1)).view_as(x).clamp_(0, 1)
        to_grey = (torch.rand(n) < 0.2).to(dev).view(n, 1, 1, 1)
        x = torch.where(to_grey, (x * grey_w).sum(1, keepdim=True).expand_as(x), x)
        x = (x - torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1)) / torch.tensor(
            IMAGENET_STD, device=dev).view(1, 3, 1, 1)
        return self._erase(x)

    @staticmethod
    def _translate(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        pad = max(2, h // 16)
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        offsets = torch.randint(0, 2 * pad + 1, (n, 2)).tolist()
        return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        if self.erasing <= 0:
            return x
        n, _, h, w = x.shape
        for i in torch.nonzero(torch.rand(n) < self.erasing).flatten().tolist():
            area = h * w * float(torch.empty(1).uniform_(0.02, 0.25))
            aspect = math.exp(float(torch.empty(1).uniform_(math.log(0.3), math.log(3.3))))
            eh, ew = min(h, round(math.sqrt(area * aspect))), min(w, round(math.sqrt(area / aspect)))
            top, left = int(torch.randint(0, h - eh + 1, ())), int(torch.randint(0, w - ew + 1, ()))
            x[i, :, top : top + eh, left : left + ew] = 0
        return x


def eval_transform(image_size: int) -> SquareTensor:
    """PIL image -> ``(3, S, S)``: square resize (bilinear, antialiased), ImageNet normalisation."""
    return SquareTensor(image_size, normalise=True)


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


def embed_dataset_batches(model: nn.Module, dataset: Dataset, device: str, batch_size: int = 64,
                          num_workers: int = 0, amp: bool = True) -> Iterator[np.ndarray]:
    """Unit vectors of a dataset of ``(tensor, label)`` in eval mode, one float32 array per batch, from
    one loader (its workers start once)."""
    cuda = device.startswith("cuda")
    mixed = amp and (cuda or cpu_has_bf16_units())  # fp16/bf16 on a GPU, bf16 on a CPU with bf16 units
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=cuda)
    was_training = model.training
    model.eval()
    try:
        for x, _ in loader:
            with torch.inference_mode():  # per batch: the mode must not leak into the caller between yields
                x = x.to(device, non_blocking=True)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda" if cuda else "cpu", dtype=autocast_dtype() if cuda else torch.bfloat16,
                                    enabled=mixed):
                    emb = model(x)
                batch = F.normalize(emb.float(), dim=1).cpu().numpy()
            yield batch
    finally:
        model.train(was_training)


def embed_dataset(model: nn.Module, dataset: Dataset, device: str, batch_size: int = 64, num_workers: int = 0,
                  amp: bool = True) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of a dataset of ``(tensor, label)`` in eval mode."""
    out = list(embed_dataset_batches(model, dataset, device, batch_size, num_workers, amp))
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
