"""One ResNet50 forward pass for both ResNet50 families.

The baseline (``resnet50``) and the ``multiscale`` family run the same trunk: built the same way, with
the same weights. The baseline's raw features are the pool of ``layer4``, which is the last 2048 of
the multi-scale family's 3840 columns (the pools of ``layer1..layer4``). So whichever of the two
embeds a crop file first keeps the four pools of that file here, and the other family, embedding
the same file with the same trunk in the same process, takes its columns instead of running the
trunk again (the demo, ``deer-reid embed`` and any run that materializes both assets in one process;
on a CPU that is one ResNet50 forward pass per crop saved).

An entry is keyed by the trunk (weights id, image size, arithmetic, device) and the file (path,
modification time, size): a rewritten file or other weights miss. The other family takes an entry
once and it is gone, so nothing stays behind once both have run; what only one family ever embeds
stays until the process ends, within ``max_bytes`` (past it nothing more is kept: the other family
then runs the trunk itself, as it would without this memo).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

RESNET_FAMILIES = ("resnet50", "multiscale")
STAGE_DIMS = (256, 512, 1024, 2048)  # pooled channels of layer1..layer4
ALL_STAGES = sum(STAGE_DIMS)
DEFAULT_MAX_BYTES = 256 << 20  # about 17,000 crops of 3840 float32


def family_columns(family: str) -> slice:
    """The columns of the four pooled stages that are ``family``'s raw features."""
    if family == "multiscale":
        return slice(0, ALL_STAGES)
    if family == "resnet50":
        return slice(ALL_STAGES - STAGE_DIMS[-1], ALL_STAGES)
    raise ValueError(f"{family!r} does not run the shared ResNet50 trunk; only {', '.join(RESNET_FAMILIES)} do")


def file_key(path: Path | str) -> tuple[str, int, int] | None:
    """``(absolute path, mtime ns, size)``, or None for a file that cannot be stat'ed (the loader then
    reports it properly)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.abspath(path), stat.st_mtime_ns, stat.st_size


class StageMemo:
    """The four pooled stages of crop files, kept by one ResNet50 family for the other."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: dict[tuple, tuple[str, np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.served = 0  # entries taken by the other family (for tests and the step's log)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, trunk: tuple, file: tuple | None, family: str, stages: np.ndarray) -> None:
        """Keep ``stages`` (the 3840 pooled values of one file) for the other family, within the budget."""
        if file is None or stages.shape != (ALL_STAGES,):
            return
        with self._lock:
            key = (trunk, file)
            if key in self._entries or self._bytes + stages.nbytes > self.max_bytes:
                return
            self._entries[key] = (family, stages.astype(np.float32, copy=True))
            self._bytes += stages.nbytes

    def take(self, trunk: tuple, file: tuple | None, family: str) -> np.ndarray | None:
        """The stages another family kept for this file and trunk (the entry is then gone), else None."""
        if file is None:
            return None
        with self._lock:
            entry = self._entries.get((trunk, file))
            if entry is None or entry[0] == family:
                return None
            del self._entries[(trunk, file)]
            self._bytes -= entry[1].nbytes
            self.served += 1
            return entry[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


def _budget() -> int:
    value = os.environ.get("DEER_REID_SHARED_TRUNK_MB")
    if value is None:
        return DEFAULT_MAX_BYTES
    try:
        return max(0, int(value)) << 20
    except ValueError:
        raise ValueError(f"DEER_REID_SHARED_TRUNK_MB must be a whole number of MiB; got {value!r}") from None


MEMO = StageMemo(_budget())  # this process's memo (0 MiB turns it off)
