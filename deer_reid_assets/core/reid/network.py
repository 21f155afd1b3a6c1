"""The deer-specific re-ID network and where its starting weights come from.

:class:`ReIDNet`: a ResNet (18, 34 or 50, torchvision's layout, from ``core/embed/resnet.py``; last stride 1 by
default) without its classifier -> global average pool -> (``Linear(raw, dim)`` when the trunk is wider than ``dim``) =
the **pre-BN feature**, which the triplet loss sees -> BN-neck (``BatchNorm1d``, bias frozen at 0) =
the **BN-neck feature**, which the ID head sees and which, L2-normalised, is the embedding.

Warm starts (``weights``): ``'random'`` (seeded, NOT pretrained), ``'imagenet'`` (torchvision's file
from torch's hub cache; downloaded if reachable), ``'auto'`` (ImageNet when cached, else random), the
path of a **torchvision-format state dict** of the same architecture (``conv1.weight``,
``layer1.0.bn1.running_mean`` ...; ``fc.*`` is ignored, a ``module.`` prefix is stripped), or the path
of an earlier **ReIDNet checkpoint** (``best.pt`` / ``last.pt``): trunk, reduction and neck continue
from it (the ID head is new, since the identities may have changed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deer_reid_assets.core.embed.backbones import LoadedWeights, WeightsUnavailableError
from deer_reid_assets.core.embed.resnet import IMAGENET_WEIGHTS, ResNet
from deer_reid_assets.core.families import EMBEDDING_DIM

CHECKPOINT_FORMAT = "deer-reid-reidnet/1"
RAW_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}
_IMAGENET = IMAGENET_WEIGHTS  # arch -> (torchvision's weights name, URL)
KEYWORDS = ("auto", "imagenet", "random")


def file_sha12(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def imagenet_cache_path(arch: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_IMAGENET[arch][1]).name


def read_reid_checkpoint(path: Path) -> dict[str, Any] | None:
    """The payload if ``path`` is a ReIDNet checkpoint written here, else None."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not ours; the caller reports properly
        return None
    if isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT:
        return dict(payload)
    return None


class Trunk(nn.Module):
    """A torchvision ResNet without ``fc``: ``(N, 3, H, W) -> (N, RAW_DIMS[arch])`` pooled features.
    State-dict keys are torchvision's minus ``fc.*``."""

    def __init__(self, arch: str, last_stride: int = 1) -> None:
        super().__init__()
        if arch not in RAW_DIMS:
            raise ValueError(f"arch must be one of {', '.join(RAW_DIMS)}; got {arch!r}")
        net = ResNet(arch)
        if last_stride == 1:
            block = net.layer4[0]
            (block.conv2 if arch == "resnet50" else block.conv1).stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_torchvision_state(trunk: Trunk, state: Mapping[str, Any], arch: str, origin: str) -> None:
    """Strictly load a torchvision-format state dict (``fc.*`` dropped, ``module.`` stripped)."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{origin}: not a state dict of tensors")
    body = {k.removeprefix("module."): v for k, v in state.items()}
    body = {k: v for k, v in body.items() if not k.startswith("fc.")}
    try:
        result = trunk.load_state_dict(body, strict=False)
    except RuntimeError as exc:
        detail = [line.strip() for line in str(exc).splitlines()[1:2]] or [str(exc)]
        raise ValueError(f"{origin}: does not fit a torchvision {arch}: {detail[0]}") from None
    problems = [f"{len(keys)} {kind} keys (e.g. {', '.join(keys[:3])})"
                for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys)) if keys]
    if problems:
        raise ValueError(f"{origin}: does not fit a torchvision {arch}: {'; '.join(problems)}")


def build_trunk(arch: str, weights: str | Path, *, seed: int = 0, last_stride: int = 1) -> tuple[Trunk, LoadedWeights]:
    """A trunk with the requested starting weights (not a ReIDNet checkpoint: see :class:`ReIDNet`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        trunk = Trunk(arch, last_stride)
    cached = imagenet_cache_path(arch)
    if weights == "random" or (weights == "auto" and not cached.is_file()):
        note = f" [auto: no cached ImageNet weights at {cached}]" if weights == "auto" else ""
        return trunk, LoadedWeights("random", f"{arch}: seeded random init (seed {seed}){note} - NOT pretrained, "
                                    "numbers are not representative of ImageNet features", f"{arch}-random-s{seed}")
    if weights in ("imagenet", "auto"):
        try:
            state = torch.hub.load_state_dict_from_url(_IMAGENET[arch][1], map_location="cpu", progress=False,
                                                       check_hash=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - offline, bad hash, corrupt file: all "unavailable"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise WeightsUnavailableError(f"ImageNet weights for {arch} could not be loaded ({reason}); "
                                          f"put the file at {cached} or use weights='random'") from None
        load_torchvision_state(trunk, state, arch, f"ImageNet weights {cached}")
        name = _IMAGENET[arch][0].lower()
        return trunk, LoadedWeights("imagenet", f"{arch}: ImageNet {name} weights from {cached}", f"{arch}-{name}")
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights {str(weights)!r} is neither one of {', '.join(KEYWORDS)} nor an existing file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"weights file {path} cannot be read as a torch state dict ({type(exc).__name__})") from None
    if not isinstance(payload, Mapping):
        raise ValueError(f"weights file {path}: expected a state dict, got {type(payload).__name__}")
    state = payload.get("state_dict", payload)
    load_torchvision_state(trunk, state, arch, f"weights file {path}")
    short = file_sha12(path)
    return trunk, LoadedWeights("checkpoint", f"{arch}: torchvision state dict {path} (sha256 {short})", f"ckpt-{short}")


class ReIDNet(nn.Module):
    """Trunk -> pooled -> (reduction) = pre-BN feature -> BN-neck = embedding before L2 norm.

    ``weights`` as described in the module docstring. The module is returned in eval mode, on CPU;
    ``forward`` gives the L2-normalised BN-neck embedding ``(N, dim)``."""

    def __init__(self, weights: str | Path = "auto", *, arch: str = "resnet50", last_stride: int = 1,
                 seed: int = 0, dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive; got {dim}")
        payload = None
        if not (isinstance(weights, str) and weights in KEYWORDS) and Path(weights).is_file():
            payload = read_reid_checkpoint(Path(weights))
        if payload is not None:
            arch = payload.get("arch", arch)
            last_stride = int(payload.get("last_stride", last_stride))
        self.trunk, self.weights = build_trunk(arch, "random" if payload else weights, seed=seed, last_stride=last_stride)
        raw = RAW_DIMS[arch]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            self.reduce = nn.Identity() if raw == dim else nn.Linear(raw, dim)
            if isinstance(self.reduce, nn.Linear):
                nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out")
                nn.init.zeros_(self.reduce.bias)
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)  # stays 0: the neck only scales
        self.arch, self.last_stride, self.dim = arch, last_stride, dim
        self.checkpoint_info: dict[str, Any] = {}
        if payload is not None:
            if int(payload.get("dim", dim)) != dim:
                raise ValueError(f"{weights}: ReIDNet checkpoint has dim {payload['dim']}, not {dim}")
            self.load_state_dict(payload["model"])
            short = file_sha12(Path(weights))
            self.weights = LoadedWeights("checkpoint", f"{arch}: ReIDNet checkpoint {weights} (sha256 {short})",
                                         f"reid-{short}")
        self.eval()

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-BN, BN-neck) features ``(N, dim)``, not normalised."""
        pre = self.reduce(self.trunk(x))
        return pre, self.neck(pre)

    forward_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(x)[1].float(), dim=1)
