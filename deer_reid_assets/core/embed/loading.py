"""Crop files -> batches of resized ``uint8`` tensors, decoded in parallel loader workers.

The model's step (to the device, to float, ImageNet normalisation, forward) then runs on the device:
the host only decodes and resizes, in ``workers`` processes, into pinned memory on CUDA so the copy
to the GPU is asynchronous and overlaps the previous batch's forward pass. ``workers=0`` is the same
code path in the calling process (the CPU default: on a CPU the model and the decoders share cores).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from deer_reid_assets.core.ingest.imaging import load_image


def resized_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """``(3, size, size)`` uint8: RGB, direct bilinear resize to a square (the embedders' preprocessing)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def uint8_batch(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """``(N, 3, size, size)`` uint8 of in-memory images."""
    if not images:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    return torch.stack([resized_uint8(im, size) for im in images])


class CropFiles(Dataset):
    """Crop files as resized uint8 tensors; a file that cannot be decoded raises ImageError naming it."""

    def __init__(self, paths: Sequence[Path | str], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return resized_uint8(load_image(self.paths[index]), self.size)


def default_workers(device: str) -> int:
    """Loader processes: none on a CPU (the model already uses every core); on a GPU enough to keep
    it fed, leaving a core for the main process."""
    if not device.startswith("cuda"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def file_batches(paths: Sequence[Path | str], size: int, batch_size: int, *, device: str = "cpu",
                 workers: int | None = None) -> Iterator[torch.Tensor]:
    """``(B, 3, size, size)`` uint8 batches of ``paths`` in order (pinned on CUDA)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n_workers = default_workers(device) if workers is None else workers
    if n_workers < 0:
        raise ValueError(f"loader workers must be >= 0, got {n_workers}")
    loader = DataLoader(CropFiles(paths, size), batch_size=batch_size, shuffle=False, num_workers=n_workers,
                        pin_memory=device.startswith("cuda"), persistent_workers=False,
                        prefetch_factor=4 if n_workers else None)
    yield from loader
