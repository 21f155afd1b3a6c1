"""Which torch device a model runs on."""

from __future__ import annotations

import os

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


_CPU_BF16: bool | None = None


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (Intel AMX or AVX512-BF16, as oneDNN uses them); there
    bf16 autocast makes training steps and the pretrained embedders' forward passes faster, elsewhere it is
    emulated and slower. ``DEER_REID_CPU_BF16``
    = 0 / 1 overrides the check."""
    global _CPU_BF16
    override = os.environ.get("DEER_REID_CPU_BF16", "").strip()
    if override in ("0", "1"):
        return override == "1"
    if _CPU_BF16 is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
        except OSError:
            flags = []
        _CPU_BF16 = "amx_bf16" in flags or "avx512_bf16" in flags
    return _CPU_BF16
