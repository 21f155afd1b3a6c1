"""The projection from raw pooled features to EMBEDDING_DIM unit vectors.

Raw pooled features are post-ReLU/-swish and mostly non-negative, so their raw cosine similarities
crowd near 1. :class:`FeatureProjection` is therefore a linear map *fitted on the data*: subtract the
mean raw feature, then project on the top principal components (PCA by eigendecomposition, on at
most ``max_samples`` rows, 2048 by default). When the sample spans fewer than 512 directions the
basis is completed with a seeded random orthonormal complement. Optional (regularised) whitening is
off by default. Embeddings are only comparable under the same projection, so a projection is
versioned by its :meth:`FeatureProjection.fingerprint`, part of the embedder's ``version_key``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deer_reid_assets.core.families import EMBEDDING_DIM


@dataclass(frozen=True, eq=False)
class FeatureProjection:
    """Centre + PCA (+ optional whitening) from raw features to ``EMBEDDING_DIM``; see module docstring.

    ``components`` is ``(raw_dim, out_dim)`` with orthonormal columns; the first ``n_data_components``
    are principal directions of the fitted sample, the rest a seeded random orthonormal complement.
    """

    mean: np.ndarray  # (raw_dim,) float32
    components: np.ndarray  # (raw_dim, out_dim) float32
    scale: np.ndarray  # (out_dim,) float32; ones unless whitened
    n_data_components: int

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        seed: int = 0,
        *,
        dim: int = EMBEDDING_DIM,
        whiten: bool = False,
        max_samples: int = 2048,
    ) -> FeatureProjection:
        """Fit on raw features ``(N, D)``; at most ``max_samples`` rows (seeded subsample) are used."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need raw features of shape (N>=2, D), got {x.shape}")
        if x.shape[1] < dim:
            raise ValueError(f"cannot project {x.shape[1]}-d features to {dim} dimensions")
        if not np.isfinite(x).all():
            raise ValueError("raw features contain NaN or inf")
        rng = np.random.default_rng(seed)
        if x.shape[0] > max_samples:
            x = x[np.sort(rng.choice(x.shape[0], max_samples, replace=False))]
        mean = x.mean(axis=0)
        x = x - mean
        # PCA by eigendecomposition of the smaller of the Gram (n x n) and covariance (D x D) matrices.
        if x.shape[0] < x.shape[1]:
            lam, u = np.linalg.eigh(x @ x.T)
            lam, u = lam[::-1], u[:, ::-1]
            vecs = x.T @ u
        else:
            lam, vecs = np.linalg.eigh(x.T @ x)
            lam, vecs = lam[::-1], vecs[:, ::-1]
        k = min(dim, int((lam > lam[0] * 1e-10).sum())) if lam[0] > 0 else 0
        basis, r = np.linalg.qr(vecs[:, :k])  # orthonormal, same leading directions
        basis = basis * np.where(np.diag(r) < 0, -1.0, 1.0)
        # Deterministic signs: largest-magnitude coefficient of each component is positive.
        signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(k)])
        basis = basis * np.where(signs == 0, 1.0, signs)
        if k < dim:
            extra = rng.standard_normal((x.shape[1], dim - k))
            for _ in range(2):  # twice for numerical orthogonality against the data basis
                extra -= basis @ (basis.T @ extra)
            basis = np.hstack([basis, np.linalg.qr(extra)[0]])
        scale = np.ones(dim)
        if whiten:
            var = np.zeros(dim)
            var[:k] = lam[:k] / (x.shape[0] - 1)
            eps = 1e-2 * var[:k].mean() if k else 1.0
            scale = 1.0 / np.sqrt(var + eps)
        return cls(mean.astype(np.float32), basis.astype(np.float32), scale.astype(np.float32), k)

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[1])

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Project raw features ``(N, in_dim)`` and L2-normalise -> ``(N, out_dim)`` float32."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"projection expects (N, {self.in_dim}) raw features, got {x.shape}")
        y = ((x - self.mean) @ self.components) * self.scale
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.maximum(norms, 1e-12)).astype(np.float32)

    def fingerprint(self) -> str:
        """First 12 hex digits of the sha256 of the arrays (dtype, shape and bytes)."""
        digest = hashlib.sha256()
        for name in ("mean", "components", "scale"):
            arr = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
            digest.update(arr.tobytes())
        return digest.hexdigest()[:12]

    def save(self, path: Path) -> None:
        """Write an ``.npz`` at exactly ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez(fh, mean=self.mean, components=self.components, scale=self.scale,
                     n_data_components=np.int64(self.n_data_components))

    @classmethod
    def load(cls, path: Path) -> FeatureProjection:
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(data["mean"], data["components"], data["scale"], int(data["n_data_components"]))
