"""Backbones of the pretrained model families and their weights: crops -> *raw* pooled features.

Each family produces raw pooled features in one forward pass per batch:

* ``resnet50`` (the baseline of the existing system): ResNet50 (torchvision's, built by ``resnet.py``
  without importing torchvision), global average pool of
  ``layer4`` -> 2048-d.
* ``multiscale``: the same ResNet50 trunk, global average pools of ``layer1..layer4``
  (256 + 512 + 1024 + 2048) concatenated -> 3840-d.
* ``efficientnet``: ``efficientnet_pytorch`` EfficientNet-B0, ``extract_features`` + global average
  pool -> 1280-d.

Weights are ``"imagenet"`` (torch hub cache, downloaded only when the download host is reachable),
``"random"`` (seeded init, the global RNG is left untouched), ``"auto"`` (ImageNet if cached, else
random) or a checkpoint path written by :func:`save_checkpoint`. Classifier heads are never part of
a backbone; their keys in a state dict (``fc.*``, ``_fc.*``) are ignored. The projection to 512-d is
in ``projection.py``, the embedder that puts both together in ``embedder.py``.
"""

from __future__ import annotations

import hashlib
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from efficientnet_pytorch import EfficientNet
from efficientnet_pytorch.utils import url_map as _EFFICIENTNET_URLS
from torch import nn

from deer_reid_assets.core.embed.device import resolve_device  # noqa: F401 - re-exported for core/reid
from deer_reid_assets.core.embed.resnet import IMAGENET_WEIGHTS, ResNet
from deer_reid_assets.core.families import EMBEDDING_DIM, FAMILIES, PRETRAINED

MODEL_FAMILIES = PRETRAINED
RAW_DIMS = {name: FAMILIES[name].raw_dim for name in PRETRAINED}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESNET_WEIGHTS_NAME, _RESNET_WEIGHTS_URL = IMAGENET_WEIGHTS["resnet50"]
_EFFICIENTNET_NAME = "efficientnet-b0"
_WEIGHT_KEYWORDS = ("imagenet", "random", "auto")
_PROBE_TIMEOUT_S = 3.0

__all__ = ["EMBEDDING_DIM", "IMAGENET_MEAN", "IMAGENET_STD", "MODEL_FAMILIES", "RAW_DIMS", "LoadedWeights",
           "WeightsUnavailableError", "build_backbone", "imagenet_weights_available", "resolve_device",
           "save_checkpoint"]


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
        net = ResNet("resnet50")
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

    def pooled_stages(self, x: torch.Tensor) -> torch.Tensor:
        """The pools of all four stages ``(N, 3840)``, whatever ``multiscale`` says: the baseline's
        features are the last 2048 columns (``core/embed/shared_trunk.py`` shares them between families)."""
        return torch.cat([F.adaptive_avg_pool2d(m, 1).flatten(1) for m in self.stages(x).values()], dim=1)


class EfficientNetTrunk(EfficientNet):
    """EfficientNet-B0 without its classifier: ``extract_features`` + global average pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._avg_pooling(self.extract_features(x)).flatten(1)


def _kaiming_convs(trunk: nn.Module) -> None:
    """efficientnet_pytorch keeps PyTorch's default conv init, under which eval-mode activations shrink
    ~100x per stage (pooled features ~1e-14, zero in fp16); fan-in Kaiming keeps them ~1e-3."""
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class _TrunkSpec:
    """How to build one pretrained family's backbone and where its ImageNet weights come from."""

    new: Callable[[], nn.Module]
    imagenet_url: str
    head_prefix: str  # classifier-head keys dropped from a state dict
    imagenet_name: str  # in the one-line description of the weights
    imagenet_id: Callable[[Path], str]  # the short weights id, from the cached file
    random_init: Callable[[nn.Module], None] = lambda trunk: None  # after the seeded default init


_RESNET_SPEC = dict(imagenet_url=_RESNET_WEIGHTS_URL, head_prefix="fc.", imagenet_name=_RESNET_WEIGHTS_NAME,
                    imagenet_id=lambda cached: _RESNET_WEIGHTS_NAME.lower())
_TRUNKS: dict[str, _TrunkSpec] = {
    "resnet50": _TrunkSpec(new=lambda: ResNetTrunk(multiscale=False), **_RESNET_SPEC),
    "multiscale": _TrunkSpec(new=lambda: ResNetTrunk(multiscale=True), **_RESNET_SPEC),
    "efficientnet": _TrunkSpec(
        new=lambda: EfficientNetTrunk.from_name(_EFFICIENTNET_NAME, include_top=False),
        imagenet_url=_EFFICIENTNET_URLS[_EFFICIENTNET_NAME], head_prefix="_fc.",
        imagenet_name=f"{_EFFICIENTNET_NAME} weights (efficientnet_pytorch)",
        imagenet_id=lambda cached: "imagenet-" + cached.stem.rsplit("-", 1)[-1], random_init=_kaiming_convs),
}
assert set(_TRUNKS) == set(PRETRAINED), "every pretrained family in core/families.py needs a trunk here"
_IMAGENET_URLS = {family: spec.imagenet_url for family, spec in _TRUNKS.items()}


def _check_family(family: str) -> None:
    if family not in _TRUNKS:
        raise ValueError(f"unknown model family {family!r}: choose one of {', '.join(_TRUNKS)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _imagenet_cache_path(family: str) -> Path:
    url = _TRUNKS[family].imagenet_url
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
    head = _TRUNKS[family].head_prefix
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
    spec = _TRUNKS[family]
    url, cached = spec.imagenet_url, _imagenet_cache_path(family)
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
    trunk = spec.new()
    _load_trunk_state(trunk, state, family, f"ImageNet weights {cached}")
    description = f"{family}: ImageNet {spec.imagenet_name} weights from {cached}"
    return trunk, LoadedWeights("imagenet", description, spec.imagenet_id(cached))


def _random_backbone(family: str, seed: int, note: str = "") -> tuple[nn.Module, LoadedWeights]:
    with torch.random.fork_rng(devices=[]):  # CPU generator only; restored on exit
        torch.default_generator.manual_seed(seed)
        trunk = _TRUNKS[family].new()
        _TRUNKS[family].random_init(trunk)
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
    trunk = _TRUNKS[family].new()
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
