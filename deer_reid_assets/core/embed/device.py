"""Which torch device a model runs on."""

from __future__ import annotations

import torch


def resolve_device(requested: str = "auto") -> str:
    """``'auto'`` -> ``'cuda'`` if available else ``'cpu'``; ``'cpu'``; ``'cuda'``/``'cuda:N'`` if present."""
    req = requested.strip().lower()
    if req == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if req == "cpu":
        return "cpu"
    if req == "cuda" or req.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {requested!r} was requested but CUDA is not available to torch {torch.__version__} "
                f"(built for CUDA {torch.version.cuda}, no usable GPU/driver): use device='cpu' or 'auto'"
            )
        index = req.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return req
    raise ValueError(f"unknown device {requested!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
