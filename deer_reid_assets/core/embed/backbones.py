"""Embedding models: deer crops -> L2-normalised 512-d float32 vectors.

Three backbone families, each producing *raw* pooled features in one forward pass per batch:

* ``resnet50`` (the baseline of the existing system): torchvision ResNet50, global average pool of
  ``layer4`` -> 2048-d.
* ``multiscale``: the same ResNet50 trunk, global average pools of ``layer1..layer4``
  (256 + 512 + 1024 + 2048) concatenated -> 3840-d.
* ``efficientnet``: ``efficientnet_pytorch`` EfficientNet-B0, ``extract_features`` + global average
  pool -> 1280-d.

Weights are ``"imagenet"`` (torch hub cache, downloaded only when the download host is reachable),
``"random"`` (seeded init, the global RNG is left untouched), ``"auto"`` (ImageNet if cached, else
random) or a checkpoint path written by :func:`save_checkpoint`. Classifier heads are never part of
a backbone; their keys in a state dict (``fc.*``, ``_fc.*``) are ignored.

Projection to 512-d: raw pooled features are post-ReLU/-swish and mostly non-negative, so their raw
cosine similarities crowd near 1. :class:`FeatureProjection` is therefore a linear map *fitted on the
data*: subtract the mean raw feature, then project on the top principal components (PCA by
eigendecomposition, on at most ``max_samples`` rows, 2048 by default). When the sample spans fewer
than 512 directions the basis is completed with a seeded random orthonormal complement. Optional
(regularised) whitening is off by default. Embeddings are only comparable under the same
projection, so a projection is versioned by its :meth:`FeatureProjection.fingerprint`, which is part
of :meth:`Embedder.version_key`.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import url_map as _EFFICIENTNET_URLS
from PIL import Image
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

MODEL_FAMILIES = ("resnet50", "multiscale", "efficientnet")
RAW_DIMS = {"resnet50": 2048, "multiscale": 3840, "efficientnet": 1280}
EMBEDDING_DIM = 512
MODEL_CODE_VERSION = "1"  # bump when preprocessing/architecture code changes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNET_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2
_EFFICIENTNET_NAME = "efficientnet-b0"
_IMAGENET_URLS = {
    "resnet50": _RESNET_WEIGHTS.url,
    "multiscale": _RESNET_WEIGHTS.url,
    "efficientnet": _EFFICIENTNET_URLS[_EFFICIENTNET_NAME],
}
_HEAD_PREFIXES = {"resnet50": "fc.", "multiscale": "fc.", "efficientnet": "_fc."}
_WEIGHT_KEYWORDS = ("imagenet", "random", "auto")
_PROBE_TIMEOUT_S = 3.0


class WeightsUnavailableError(ValueError):
    """ImageNet weights are neither cached nor downloadable."""


@dataclass(frozen=True)
class LoadedWeights:
    """Which weights a backbone actually got."""

    source: str  # 'imagenet' | 'random' | 'checkpoint'
    description: str  # one line for users
    weights_id: str  # short stable id: 'imagenet1k_v2', 'random-s0', 'ckpt-<sha256[:12]>'


# --------------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------------


class ResNetTrunk(nn.Module):
    """ResNet50 without its classifier; pools ``layer4`` or, if ``multiscale``, all four stages.

    State-dict keys are those of torchvision's ResNet50 minus ``fc.*``.
    """

    def __init__(self, *, multiscale: bool) -> None:
        super().__init__()
        net = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.multiscale = multiscale

    def stages(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Feature maps after ``layer1..layer4`` (strides 4, 8, 16, 32) from one pass over ``x``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: dict[str, torch.Tensor] = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.stages(x)
        chosen = list(maps.values()) if self.multiscale else [maps["layer4"]]
        return torch.cat([F.adaptive_avg_pool2d(m, 1).flatten(1) for m in chosen], dim=1)


class EfficientNetTrunk(EfficientNet):
    """EfficientNet-B0 without its classifier: ``extract_features`` + global average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._avg_pooling(self.extract_features(x)).flatten(1)


def _new_trunk(family: str) -> nn.Module:
    if family == "efficientnet":
        return EfficientNetTrunk.from_name(_EFFICIENTNET_NAME, include_top=False)
    return ResNetTrunk(multiscale=family == "multiscale")


def _check_family(family: str) -> None:
    if family not in MODEL_FAMILIES:
        raise ValueError(f"unknown model family {family!r}: choose one of {', '.join(MODEL_FAMILIES)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _imagenet_cache_path(family: str) -> Path:
    url = _IMAGENET_URLS[family]
    filename = Path(urllib.parse.urlparse(url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def imagenet_weights_available(family: str) -> bool:
    """True when the family's ImageNet weights are already in the torch hub cache (no network)."""
    _check_family(family)
    return _imagenet_cache_path(family).is_file()


def _download_reachable(url: str) -> bool:
    """Quick TCP probe of the download host, so an offline machine fails in seconds, not minutes."""
    if urllib.request.getproxies().get("https"):
        return True  # the proxy decides; let the real download report
    host = urllib.parse.urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _load_trunk_state(trunk: nn.Module, state_dict: Mapping[str, Any], family: str, origin: str) -> None:
    """Strictly load ``state_dict`` (classifier-head keys dropped) into ``trunk``; ValueError if off."""
    head = _HEAD_PREFIXES[family]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()):
        raise ValueError(f"{origin}: not a state dict of tensors")
    body = {k: v for k, v in state_dict.items() if not k.startswith(head)}
    try:
        result = trunk.load_state_dict(body, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise ValueError(f"{origin}: does not fit the {family} backbone: {first[0].strip()}") from None
    problems = [
        f"{len(keys)} {kind} keys (e.g. {', '.join(keys[:3])})"
        for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise ValueError(f"{origin}: does not fit the {family} backbone: {'; '.join(problems)}")


def _imagenet_backbone(family: str) -> tuple[nn.Module, LoadedWeights]:
    url, cached = _IMAGENET_URLS[family], _imagenet_cache_path(family)
    if not cached.is_file() and not _download_reachable(url):
        raise WeightsUnavailableError(
            f"ImageNet weights for {family} are not cached ({cached}) and cannot be downloaded from {url}: "
            f"run once with internet, copy the file into {cached.parent}, "
            "or use weights='random' / a checkpoint path"
        )
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True,
                                                   weights_only=True)
    except Exception as exc:  # noqa: BLE001 - network, hash and unpickling errors all mean "unavailable"
        raise WeightsUnavailableError(
            f"ImageNet weights for {family} could not be loaded ({_first_line(exc)}); expected file {cached}: "
            "delete a corrupt file and run once with internet, or use weights='random' / a checkpoint path"
        ) from None
    trunk = _new_trunk(family)
    _load_trunk_state(trunk, state, family, f"ImageNet weights {cached}")
    if family == "efficientnet":
        weights_id = "imagenet-" + cached.stem.rsplit("-", 1)[-1]
        description = f"efficientnet: ImageNet {_EFFICIENTNET_NAME} weights (efficientnet_pytorch) from {cached}"
    else:
        weights_id = _RESNET_WEIGHTS.name.lower()
        description = f"{family}: ImageNet {_RESNET_WEIGHTS.name} weights from {cached}"
    return trunk, LoadedWeights("imagenet", description, weights_id)


def _random_backbone(family: str, seed: int, note: str = "") -> tuple[nn.Module, LoadedWeights]:
    with torch.random.fork_rng(devices=[]):  # CPU generator only; restored on exit
        torch.default_generator.manual_seed(seed)
        trunk = _new_trunk(family)
        if family == "efficientnet":
            # efficientnet_pytorch keeps PyTorch's default conv init, under which eval-mode activations
            # shrink ~100x per stage (pooled features ~1e-14, zero in fp16); fan-in Kaiming keeps them ~1e-3.
            for module in trunk.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_in")
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
    description = (
        f"{family}: seeded random init (seed {seed}){note} - NOT pretrained, "
        "numbers are not representative of ImageNet features"
    )
    return trunk, LoadedWeights("random", description, f"random-s{seed}")


def _checkpoint_backbone(family: str, path: Path) -> tuple[nn.Module, LoadedWeights]:
    if not path.is_file():
        raise ValueError(
            f"checkpoint {path} does not exist (weights must be one of {', '.join(_WEIGHT_KEYWORDS)} "
            "or the path of a .pt checkpoint)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise ValueError(f"checkpoint {path} cannot be read as a torch state dict: {_first_line(exc)}") from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"checkpoint {path}: expected a state dict or {{'state_dict', 'config'}}, "
                         f"got {type(payload).__name__}")
    state = payload.get("state_dict", payload)
    config = payload.get("config") or {}
    if not isinstance(state, Mapping):
        raise ValueError(f"checkpoint {path}: 'state_dict' is a {type(state).__name__}, not a mapping")
    if isinstance(config, Mapping) and config.get("family", family) != family:
        raise ValueError(f"checkpoint {path} was saved for family {config['family']!r}, not {family!r}")
    trunk = _new_trunk(family)
    _load_trunk_state(trunk, state, family, f"checkpoint {path}")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    short = digest.hexdigest()[:12]
    description = f"{family}: checkpoint {path} (sha256 {short})"
    return trunk, LoadedWeights("checkpoint", description, f"ckpt-{short}")


def build_backbone(
    family: str, weights: str | Path = "auto", *, seed: int = 0
) -> tuple[nn.Module, LoadedWeights]:
    """Backbone in eval mode on CPU whose ``forward((N,3,H,W)) -> (N, RAW_DIMS[family])`` pooled features.

    ``weights``: ``"imagenet"`` | ``"random"`` | ``"auto"`` | checkpoint path. Raises
    :class:`WeightsUnavailableError` when ImageNet weights are requested but unavailable, ValueError for
    an unknown family or an unusable checkpoint.
    """
    _check_family(family)
    if isinstance(weights, str) and weights in _WEIGHT_KEYWORDS:
        if weights == "random":
            trunk, loaded = _random_backbone(family, seed)
        elif weights == "imagenet" or imagenet_weights_available(family):
            trunk, loaded = _imagenet_backbone(family)
        else:
            trunk, loaded = _random_backbone(
                family, seed, note=f" [auto: no cached ImageNet weights at {_imagenet_cache_path(family)}]"
            )
    else:
        trunk, loaded = _checkpoint_backbone(family, Path(weights))
    return trunk.eval(), loaded


def save_checkpoint(module: nn.Module, path: Path, config: dict) -> None:
    """Write ``{'state_dict', 'config'}`` loadable by ``build_backbone(family, path)``.

    ``config`` must hold plain values (str/int/float/bool/list/dict) so it loads with ``weights_only``;
    a ``'family'`` entry is checked on load.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"state_dict": state, "config": dict(config)}, path)


# --------------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Embedder
# --------------------------------------------------------------------------------------------------


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
        return RAW_DIMS[self.family]

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
