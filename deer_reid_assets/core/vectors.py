"""Checks on embedding matrices, written once: finite 2-D arrays, unit-norm rows.

Pure numpy. Each raises ValueError naming the input (``name``) and the first offending row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

UNIT_NORM_TOLERANCE = 1e-3  # a stored or compared embedding's norm is 1 within this


def embedding_matrix(values: Any, name: str) -> np.ndarray:
    """``values`` as a finite 2-D float array, else ValueError."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, dim); got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
            raise ValueError(f"{name} must be numeric; got dtype {array.dtype}")
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return array


def normalise_rows(matrix: np.ndarray, name: str) -> np.ndarray:
    """Rows divided by their L2 norm; ValueError on a zero-norm row (cosine is undefined there)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise ValueError(f"{name} has zero-norm rows (first: index {int(zero[0])})")
    return matrix / norms


def unit_norm_rows(values: Any, name: str, atol: float) -> np.ndarray:
    """A finite 2-D float64 array whose rows have norm 1 within ``atol``, re-normalised exactly;
    ValueError naming the first row off unit norm otherwise."""
    array = embedding_matrix(values, name).astype(np.float64)
    if array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column")
    norms = np.linalg.norm(array, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > atol)
    if off.size:
        i = int(off[0])
        raise ValueError(f"{name} rows must be unit norm (tolerance {atol}); row {i} has norm {norms[i]:.6g}")
    return array / norms[:, None] if array.shape[0] else array


def check_length(values: Any, expected: int, name: str, reference: str) -> None:
    if len(values) != expected:
        raise ValueError(f"{name} has length {len(values)} but {reference} has {expected}")


def identity_labels(values: Any, name: str) -> list[str]:
    """Identity labels must be non-empty strings (unlabelled detections are filtered out upstream)."""
    labels = list(values)
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise ValueError(f"{name}[{i}] must be a non-empty string; got {label!r}")
    return labels


def check_dims(query: np.ndarray, reference: np.ndarray, query_name: str, ref_name: str) -> None:
    if query.shape[1] != reference.shape[1]:
        raise ValueError(f"{query_name} has dimension {query.shape[1]} but {ref_name} has {reference.shape[1]}")
