"""Training core for a deer-specific ResNet50 embedding: batch-hard triplet loss on P x K batches.

Model (:class:`ReIDNet`): ResNet50 trunk (:func:`models.build_backbone`, ImageNet weights when cached)
-> 2048-d average pool -> ``Linear(2048, 512)`` -> BN-neck (``BatchNorm1d(512)``, bias frozen at 0)
-> L2 normalisation. ``forward`` returns the normalised post-BN vector.

*Which feature the triplet loss sees.* The BNNeck recipe (Luo et al. 2019) puts the triplet loss on
the pre-BN feature because a softmax ID loss trains the post-BN one. Here the triplet loss is the only
loss, so it is applied to the **normalised post-BN feature, the same vector used for inference**:
training and inference then use the same metric, and the BN-neck (whose bias stays at zero) centres
and standardises the features so cosine similarities do not crowd near 1. ``forward_features``
returns both the pre- and post-BN features for experiments.

*Distances* in :func:`batch_hard_triplet_loss` are Euclidean distances between L2-normalised vectors,
``sqrt(2 - 2 cos)`` (monotone in cosine, so the ranking equals the cosine ranking used at matching).

*Sampling*: :class:`PKSampler` draws P identities x K crops per batch. An identity with fewer than K
(but at least 2) crops is filled up by drawing its crops again (with replacement); identities with a
single crop are left out (they cannot form a positive pair) and listed in ``excluded``. When fewer
than P identities are usable, every batch holds all of them (``sampler.p`` is then smaller than asked).

*Schedule*: AdamW; the learning rate is set before every step: linear warm-up over
``warmup_epochs`` epochs, then cosine decay to 0 over the remaining steps. Mixed precision (bf16 where
supported, else fp16 with a gradient scaler) and channels_last are used on CUDA only.

*Determinism and resuming*: the global torch RNG is re-seeded from ``(seed, epoch)`` at the start of
every epoch (augmentations, DataLoader worker seeds) and the sampler is seeded the same way, so a run
resumed from ``last.pt`` continues exactly as an uninterrupted one would (on CPU; CUDA kernels may
differ in the last bits). :func:`train` runs inside ``torch.random.fork_rng``: the caller's RNG state
is left as it was. On CPU ``torch.use_deterministic_algorithms(True, warn_only=True)`` is set for the
duration of the call. ``last.pt`` may be resumed with a different ``epochs`` (the schedule is then
recomputed for the new length), ``early_stopping_patience`` or ``num_workers``; every other config
field, the ``manifest_version`` and the item list must match, else :func:`train` refuses to resume.

*Validation* each epoch: the validation crops are embedded (eval mode) and every crop is a query
against all *other* validation crops (leave-one-out; the query's own identity may have further
crops, other identities act as distractors). Rank-1 and mAP follow the definitions of
:func:`metrics.retrieval_metrics` (cosine ranking, ties keep gallery order); queries whose identity has
no other validation crop are skipped. See :func:`leave_one_out_retrieval`.

*Checkpoints* (``torch.save`` of plain dicts, loadable with ``torch.load(..., weights_only=True)``):
``best.pt`` (best validation mAP) and ``last.pt`` (every epoch, for resuming) both hold ``model`` (a
state dict), ``config`` (:meth:`TrainConfig.to_json`), ``manifest_version``, ``epoch``, ``val_mAP``,
``val_rank1``, ``history`` and ``backbone_weights``; ``last.pt`` adds ``optimizer``, ``scheduler``,
``grad_scaler``, ``rng`` and the early-stopping state. Either file loads with
:func:`load_reid_model`, and either can be ``backbone_weights`` of a new run (fine-tuning from it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from deer_reid_assets.core.embed.backbones import (
    EMBEDDING_DIM,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RAW_DIMS,
    LoadedWeights,
    build_backbone,
    resolve_device,
)
from deer_reid_assets.core.ingest.imaging import load_image

CHECKPOINT_FORMAT = "deer-reid-reidnet/1"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "early_stopping_patience", "num_workers")
MIN_IMPROVEMENT = 1e-6  # a validation mAP must beat the best by more than this to count
VAL_BATCH_SIZE = 64
_LOO_QUERY_BLOCK = 1024

# An image: a file path (decoded with imaging.load_image, RGB), a PIL image, or a zero-argument
# callable returning a PIL image (a loader).
ImageSource = Path | str | Image.Image | Callable[[], Image.Image]


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (see the module docstring for their use)."""

    epochs: int = 60
    image_size: int = 224
    p: int = 16  # identities per batch
    k: int = 4  # crops per identity in a batch
    margin: float = 0.3
    soft_margin: bool = False
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: int = 5
    batches_per_epoch: int | None = None  # None: usable train crops // (p * k), at least 1
    early_stopping_patience: int = 10
    seed: int = 0
    backbone_weights: str = "auto"  # 'imagenet' | 'random' | 'auto' | checkpoint path
    num_workers: int = 0
    amp: bool = True  # mixed precision, CUDA only

    def __post_init__(self) -> None:
        if isinstance(self.backbone_weights, Path):
            object.__setattr__(self, "backbone_weights", str(self.backbone_weights))
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("image_size", self.image_size >= 32, "at least 32"),
            ("p", self.p >= 2, "at least 2 (negatives need a second identity)"),
            ("k", self.k >= 2, "at least 2 (positives need a second crop)"),
            ("margin", self.margin >= 0, ">= 0"),
            ("lr", self.lr >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("batches_per_epoch", self.batches_per_epoch is None or self.batches_per_epoch >= 1,
             "None or at least 1"),
            ("early_stopping_patience", self.early_stopping_patience >= 1, "at least 1"),
            ("seed", self.seed >= 0, ">= 0"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {rule}; got {getattr(self, name)!r}")
        if not isinstance(self.backbone_weights, str) or not self.backbone_weights:
            raise ValueError(f"TrainConfig.backbone_weights must be a non-empty string; got {self.backbone_weights!r}")

    @classmethod
    def cpu_profile(cls, **overrides: Any) -> TrainConfig:
        """Small run for a CPU-only demo: 96 px, 8 epochs of 20 batches of 8 x 4 crops."""
        values: dict[str, Any] = {
            "epochs": 8, "image_size": 96, "p": 8, "k": 4, "warmup_epochs": 1, "batches_per_epoch": 20,
            "early_stopping_patience": 4,
        }
        values.update(overrides)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """Plain dict (JSON- and ``weights_only``-safe)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_json`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**dict(data))


# --------------------------------------------------------------------------------------------------
# Sampling and loss
# --------------------------------------------------------------------------------------------------


class PKSampler(Sampler[list[int]]):
    """Batches of P identities x K indices each (a ``batch_sampler`` for a DataLoader).

    Identities are taken in a shuffled order, cycling through all of them before any repeats, and are
    distinct within a batch. An identity with at least K crops gives K distinct ones; one with fewer
    (but at least 2) gives all its crops plus random repeats (sampling with replacement). Identities
    with a single crop are excluded (``excluded``, sorted). If fewer than P identities are usable,
    ``p`` becomes their number. Batches depend only on ``(seed, epoch)``: call :meth:`set_epoch`
    before iterating; iterating twice at the same epoch gives the same batches.
    """

    def __init__(self, labels: Sequence[str], p: int, k: int, *, batches: int | None = None, seed: int = 0) -> None:
        if p < 2 or k < 2:
            raise ValueError(f"PKSampler needs p >= 2 and k >= 2; got p={p}, k={k}")
        if batches is not None and batches < 1:
            raise ValueError(f"batches must be None or at least 1; got {batches}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0; got {seed}")
        groups: dict[str, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
        self.identities: list[str] = sorted(label for label, idx in groups.items() if len(idx) >= 2)
        self.excluded: list[str] = sorted(label for label, idx in groups.items() if len(idx) < 2)
        if len(self.identities) < 2:
            raise ValueError(
                f"PKSampler needs at least 2 identities with 2 or more crops; got {len(self.identities)} "
                f"({len(self.excluded)} single-crop identities excluded)"
            )
        self.requested_p = p
        self.p = min(p, len(self.identities))
        self.k = k
        self._groups = [np.asarray(groups[label], dtype=np.int64) for label in self.identities]
        self.n_usable = int(sum(g.size for g in self._groups))
        self.batches = batches if batches is not None else max(1, self.n_usable // (self.p * self.k))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0; got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pool: list[int] = []
        for _ in range(self.batches):
            chosen: list[int] = []
            deferred: list[int] = []
            while len(chosen) < self.p:
                if not pool:
                    pool = rng.permutation(len(self._groups)).tolist()
                identity = pool.pop()
                (deferred if identity in chosen else chosen).append(identity)
            pool.extend(reversed(deferred))  # they come out first next time
            batch: list[int] = []
            for identity in chosen:
                items = self._groups[identity]
                if items.size >= self.k:
                    picked = rng.choice(items, size=self.k, replace=False)
                else:
                    extra = rng.choice(items, size=self.k - items.size, replace=True)
                    picked = np.concatenate([rng.permutation(items), extra])
                batch.extend(int(i) for i in picked)
            yield batch


def batch_hard_triplet_loss(
    emb: torch.Tensor, labels: torch.Tensor, margin: float = 0.3, soft: bool = False
) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on L2-normalised embeddings ``(N, D)``.

    Distance: Euclidean on the unit vectors, ``sqrt(max(2 - 2 cos, 1e-12))``. For each anchor, the
    hardest positive is the farthest other row with its label, the hardest negative the closest row
    with another label; loss = mean over anchors of ``relu(d_pos - d_neg + margin)``, or of
    ``softplus(d_pos - d_neg)`` when ``soft``. Anchors without a positive or a negative in the batch
    are skipped; if none is left the loss is a zero that still has a gradient.
    """
    if emb.ndim != 2:
        raise ValueError(f"emb must be (N, D); got shape {tuple(emb.shape)}")
    labels = torch.as_tensor(labels, device=emb.device)
    if labels.ndim != 1 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"labels must be ({emb.shape[0]},); got shape {tuple(labels.shape)}")
    cos = emb @ emb.T
    dist = (2.0 - 2.0 * cos).clamp_min(1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
    positive = same & ~eye
    negative = ~same
    valid = positive.any(dim=1) & negative.any(dim=1)
    if not bool(valid.any()):
        return emb.sum() * 0.0
    d_pos = torch.where(positive, dist, torch.full_like(dist, -math.inf)).amax(dim=1)
    d_neg = torch.where(negative, dist, torch.full_like(dist, math.inf)).amin(dim=1)
    gap = (d_pos - d_neg)[valid]
    losses = F.softplus(gap) if soft else F.relu(gap + margin)
    return losses.mean()


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def _file_sha12(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def _read_reid_checkpoint(path: Path) -> dict[str, Any] | None:
    """The payload if ``path`` is a ReIDNet checkpoint written here, else None."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not ours; build_backbone reports properly
        return None
    if isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT:
        return dict(payload)
    return None


class ReIDNet(nn.Module):
    """ResNet50 trunk -> 2048 pooled -> Linear(2048, dim) -> BN-neck (bias frozen) -> L2 norm.

    ``backbone_weights``: as :func:`models.build_backbone` (``'auto'`` | ``'imagenet'`` | ``'random'``
    | a trunk checkpoint path), or the path of a ReIDNet checkpoint (``best.pt`` / ``last.pt``), whose
    complete weights (trunk, head and neck) are then loaded. The head is initialised from ``seed``
    without touching the global RNG. The module is returned in eval mode, on CPU.
    """

    def __init__(self, backbone_weights: str | Path = "auto", seed: int = 0, dim: int = EMBEDDING_DIM) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be positive; got {dim}")
        reid_payload = None
        keyword = isinstance(backbone_weights, str) and backbone_weights in ("auto", "imagenet", "random")
        if not keyword and Path(backbone_weights).is_file():
            reid_payload = _read_reid_checkpoint(Path(backbone_weights))
        trunk, weights = build_backbone("resnet50", "random" if reid_payload else backbone_weights, seed=seed)
        self.trunk = trunk
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(RAW_DIMS["resnet50"], dim)
            nn.init.kaiming_normal_(self.head.weight, mode="fan_out")
            nn.init.zeros_(self.head.bias)
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)  # stays 0: the neck only scales, the embedding stays centred
        self.dim = dim
        self.weights: LoadedWeights = weights
        self.checkpoint_info: dict[str, Any] = {}  # filled by load_reid_model
        if reid_payload is not None:
            if int(reid_payload.get("dim", dim)) != dim:
                raise ValueError(f"{backbone_weights}: ReIDNet checkpoint has dim {reid_payload['dim']}, not {dim}")
            self.load_state_dict(reid_payload["model"])
            short = _file_sha12(Path(backbone_weights))
            self.weights = LoadedWeights(
                "checkpoint", f"resnet50: ReIDNet checkpoint {backbone_weights} (sha256 {short})", f"reid-{short}"
            )
        self.eval()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre-BN, post-BN) features ``(N, dim)``, not normalised."""
        pre = self.head(self.trunk(x))
        return pre, self.neck(pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised post-BN embedding ``(N, dim)``: the vector trained by the triplet loss."""
        return F.normalize(self.forward_features(x)[1].float(), dim=1)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def train_augmentations(image_size: int) -> v2.Compose:
    """PIL image -> normalised float tensor ``(3, S, S)`` with training augmentation.

    Square resize (as at inference), horizontal flip (deer face either way), a small random
    translation (edge padding + random crop), colour jitter, random greyscale (night infrared shots)
    and random erasing (occlusion by vegetation)."""
    pad = max(2, image_size // 16)
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Pad(pad, padding_mode="edge"),
        v2.RandomCrop(image_size),
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.25, hue=0.03),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomErasing(p=0.5, scale=(0.02, 0.25), value=0),
    ])


def eval_transform(image_size: int) -> v2.Compose:
    """PIL image -> ``(3, S, S)``: square resize (bilinear, antialiased), ImageNet normalisation."""
    return v2.Compose([
        v2.ToImage(),
        v2.Resize((image_size, image_size), antialias=True),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _open(source: ImageSource) -> Image.Image:
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


class _Images(Dataset):
    def __init__(self, sources: Sequence[ImageSource], labels: Sequence[int], transform: Callable) -> None:
        self.sources, self.labels, self.transform = list(sources), list(labels), transform

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(_open(self.sources[index])), self.labels[index]


def _unzip(items: Sequence[tuple[ImageSource, str]], name: str) -> tuple[list[ImageSource], list[str]]:
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


def _fingerprint(*groups: tuple[Sequence[ImageSource], Sequence[str]]) -> str:
    """Hash of the item lists (paths and identities; in-memory images count by position only)."""
    digest = hashlib.sha256()
    for sources, identities in groups:
        rows = [
            [str(s) if isinstance(s, (str, os.PathLike)) else type(s).__name__, ident]
            for s, ident in zip(sources, identities)
        ]
        digest.update(json.dumps(rows).encode())
        digest.update(b"|")
    return digest.hexdigest()[:16]


def _autocast_dtype() -> torch.dtype:
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _embed_sources(
    model: ReIDNet, sources: Sequence[ImageSource], image_size: int, device: str, batch_size: int,
    num_workers: int = 0, amp: bool = True,
) -> np.ndarray:
    cuda = device.startswith("cuda")
    dataset = _Images(sources, [0] * len(sources), eval_transform(image_size))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=cuda)
    amp_dtype = _autocast_dtype() if cuda else torch.bfloat16
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for x, _ in loader:
                x = x.to(device, non_blocking=True)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=amp_dtype, enabled=cuda and amp):
                    emb = model(x)
                out.append(F.normalize(emb.float(), dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.empty((0, model.dim), dtype=np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def embed_images(
    model: ReIDNet, images: Sequence[ImageSource], image_size: int, device: str = "cpu", batch_size: int = 32
) -> np.ndarray:
    """``(N, dim)`` float32 unit vectors of PIL images (paths and loaders work too), in eval mode
    under ``inference_mode`` with :func:`eval_transform`. The model is moved to ``device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    dev = resolve_device(device)
    model.to(dev)
    return _embed_sources(model, list(images), image_size, dev, batch_size)


def leave_one_out_retrieval(emb: np.ndarray, identities: Sequence[str]) -> dict[str, Any]:
    """Rank-1 / mAP with every row as a query against all *other* rows (cosine, descending; ties keep
    row order) -- what :func:`metrics.retrieval_metrics` gives for each query with itself removed from
    the gallery, averaged over queries whose identity has another row. ``n_queries`` counts those."""
    matrix = np.asarray(emb)
    if matrix.ndim != 2 or matrix.shape[0] != len(identities):
        raise ValueError(f"emb must be ({len(identities)}, D); got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.floating):
        matrix = matrix.astype(np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.all(np.isfinite(matrix)) or np.any(norms == 0):
        raise ValueError("emb must be finite with no zero rows")
    unit = matrix / norms
    labels = np.asarray(list(identities), dtype=object)
    _, codes, counts = np.unique(labels.astype(str), return_inverse=True, return_counts=True)
    queries = np.flatnonzero(counts[codes] >= 2)
    if queries.size == 0:
        return {"rank1": 0.0, "mAP": 0.0, "n_queries": 0}
    ranks = np.arange(1, unit.shape[0], dtype=np.float64)  # the gallery has n - 1 rows
    hits, ap_total = 0, 0.0
    for start in range(0, queries.size, _LOO_QUERY_BLOCK):
        block = queries[start : start + _LOO_QUERY_BLOCK]
        sims = unit[block] @ unit.T
        sims[np.arange(block.size), block] = -np.inf  # the query itself sorts last, then is dropped
        order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]
        relevant = codes[order] == codes[block][:, None]
        hits += int(relevant[:, 0].sum())
        precision = np.cumsum(relevant, axis=1) / ranks
        ap_total += float(((precision * relevant).sum(axis=1) / relevant.sum(axis=1)).sum())
    return {"rank1": hits / queries.size, "mAP": ap_total / queries.size, "n_queries": int(queries.size)}


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@dataclass
class EpochLog:
    epoch: int  # 1-based
    loss: float  # mean training loss over the epoch's steps
    val_rank1: float
    val_mAP: float
    lr: float  # learning rate of the epoch's last step
    seconds: float  # wall time of the epoch, validation included
    images_per_s: float  # training images / training time (validation excluded)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_mAP: float
    history: list[EpochLog]
    checkpoint: Path  # best.pt
    stopped_early: bool
    resumed_from: int | None  # epoch of the last.pt this call started from; None for a fresh run
    backbone_weights: dict[str, str] = field(default_factory=dict)  # LoadedWeights of the initial trunk
    notes: list[str] = field(default_factory=list)  # things worth telling the user (excluded identities ...)

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(log) for log in self.history], columns=[f.name for f in fields(EpochLog)])


def _lr_at(step: int, base: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``base`` over ``warmup_steps`` steps, then cosine decay towards 0."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1, dtype=np.uint64)[0] >> 1)


@contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _rng_state(cuda: bool) -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state), "gauss": gauss},
    }


def _set_rng_state(state: Mapping[str, Any], cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    if cuda and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def _cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_resume_state(
    path: Path, config: TrainConfig, manifest_version: str, fingerprint: str
) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} cannot be read ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}): "
                         "delete it to start over") from None
    if not isinstance(state, Mapping) or state.get("format") != CHECKPOINT_FORMAT or "optimizer" not in state:
        raise ValueError(f"{path} is not a resumable ReIDNet checkpoint: delete it or use another out_dir")
    saved, current = dict(state["config"]), config.to_json()
    differences = [
        f"{key}: {saved.get(key)!r} -> {value!r}"
        for key, value in current.items()
        if key not in RESUMABLE_CHANGES and saved.get(key) != value
    ]
    if state.get("manifest_version", "") != manifest_version:
        differences.append(f"manifest_version: {state.get('manifest_version')!r} -> {manifest_version!r}")
    if state.get("data_fingerprint") != fingerprint:
        differences.append("train/val items differ")
    if differences:
        raise ValueError(
            f"{path} belongs to a different run ({'; '.join(differences)}): use another out_dir, "
            f"or delete {LAST_CHECKPOINT} and {BEST_CHECKPOINT} there to start over"
        )
    return dict(state)


def train(
    train_items: Sequence[tuple[ImageSource, str]],
    val_items: Sequence[tuple[ImageSource, str]],
    config: TrainConfig,
    out_dir: Path,
    *,
    device: str = "cpu",
    progress: Callable[[EpochLog], None] | None = None,
    manifest_version: str = "",
) -> TrainResult:
    """Train a :class:`ReIDNet` with batch-hard triplet loss; write ``best.pt`` and ``last.pt`` under
    ``out_dir``, resuming from ``last.pt`` when it is there (see the module docstring).

    ``train_items`` / ``val_items``: ``(image, identity)`` pairs, the image a path, PIL image or loader.
    ``val_items`` needs at least one identity with two crops. ``progress`` is called after each epoch
    (once its checkpoints are written).
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    cuda = dev.startswith("cuda")
    train_sources, train_ids = _unzip(train_items, "train_items")
    val_sources, val_ids = _unzip(val_items, "val_items")
    if not any(n >= 2 for n in Counter(val_ids).values()):
        raise ValueError("val_items must hold at least one identity with 2 or more crops (leave-one-out retrieval)")
    sampler = PKSampler(train_ids, config.p, config.k, batches=config.batches_per_epoch, seed=config.seed)
    notes: list[str] = []
    if sampler.excluded:
        notes.append(f"{len(sampler.excluded)} single-crop identities left out of training: "
                     f"{', '.join(sampler.excluded[:10])}{' ...' if len(sampler.excluded) > 10 else ''}")
    if sampler.p < config.p:
        notes.append(f"only {sampler.p} identities with 2+ crops: batches hold {sampler.p} x {config.k}, not "
                     f"{config.p} x {config.k}")
    codes = {identity: i for i, identity in enumerate(sampler.identities)}
    train_set = _Images(train_sources, [codes.get(i, -1) for i in train_ids], train_augmentations(config.image_size))
    fingerprint = _fingerprint((train_sources, train_ids), (val_sources, val_ids))
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out_dir / BEST_CHECKPOINT, out_dir / LAST_CHECKPOINT
    state = _load_resume_state(last_path, config, manifest_version, fingerprint) if last_path.is_file() else None
    if state is not None and not best_path.is_file():
        raise ValueError(f"{last_path} exists but {best_path} does not: delete {last_path} to start over")

    devices = [torch.device(dev).index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices), _determinism(not cuda):
        if state is None:
            model = ReIDNet(config.backbone_weights, seed=config.seed)
        else:
            model = ReIDNet("random", seed=config.seed)
            model.load_state_dict(state["model"])
            model.weights = LoadedWeights(**state["backbone_weights"])
        model.to(dev)
        if cuda:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
        )
        use_amp = cuda and config.amp
        amp_dtype = _autocast_dtype() if cuda else torch.bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        steps_per_epoch = len(sampler)
        warmup_steps, total_steps = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch

        history: list[EpochLog] = []
        best_epoch, best_map, bad_epochs, resumed_from = 0, -1.0, 0, None
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            if state.get("grad_scaler") and scaler.is_enabled():
                scaler.load_state_dict(state["grad_scaler"])
            _set_rng_state(state["rng"], cuda)
            history = [EpochLog(**h) for h in state["history"]]
            best_epoch, best_map = int(state["best_epoch"]), float(state["best_val_mAP"])
            bad_epochs, resumed_from = int(state["epochs_without_improvement"]), int(state["epoch"])
        start = (resumed_from or 0) + 1
        stopped_early = bad_epochs >= config.early_stopping_patience and start <= config.epochs
        common = {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_json(),
            "manifest_version": manifest_version,
            "data_fingerprint": fingerprint,
            "dim": model.dim,
            "backbone_weights": asdict(model.weights),
        }

        epoch = start
        while not stopped_early and epoch <= config.epochs:
            started = time.perf_counter()
            torch.manual_seed(_epoch_seed(config.seed, epoch))
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=cuda)
            model.train()
            losses: list[float] = []
            n_images, lr = 0, config.lr
            for step, (x, y) in enumerate(loader):
                global_step = (epoch - 1) * steps_per_epoch + step
                lr = _lr_at(global_step, config.lr, warmup_steps, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
                    emb = model(x)
                loss = batch_hard_triplet_loss(emb.float(), y, config.margin, config.soft_margin)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {step + 1}: "
                                             "lower the lr or disable amp")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                n_images += int(x.shape[0])
            train_seconds = time.perf_counter() - started
            val_emb = _embed_sources(model, val_sources, config.image_size, dev, VAL_BATCH_SIZE,
                                     config.num_workers, config.amp)
            val = leave_one_out_retrieval(val_emb, val_ids)
            log = EpochLog(
                epoch=epoch,
                loss=float(np.mean(losses)) if losses else float("nan"),
                val_rank1=float(val["rank1"]),
                val_mAP=float(val["mAP"]),
                lr=float(lr),
                seconds=time.perf_counter() - started,
                images_per_s=n_images / train_seconds if train_seconds > 0 else float("nan"),
            )
            history.append(log)
            plain_history = [asdict(h) for h in history]
            if log.val_mAP > best_map + MIN_IMPROVEMENT:
                best_epoch, best_map, bad_epochs = epoch, log.val_mAP, 0
                _atomic_save({**common, "model": _cpu_state_dict(model), "epoch": epoch, "val_mAP": log.val_mAP,
                              "val_rank1": log.val_rank1, "history": plain_history}, best_path)
            else:
                bad_epochs += 1
            stopped_early = bad_epochs >= config.early_stopping_patience and epoch < config.epochs
            _atomic_save({
                **common,
                "model": _cpu_state_dict(model),
                "epoch": epoch,
                "val_mAP": log.val_mAP,
                "val_rank1": log.val_rank1,
                "history": plain_history,
                "optimizer": optimizer.state_dict(),
                "scheduler": {"kind": "warmup_cosine_per_step", "global_step": epoch * steps_per_epoch,
                              "warmup_steps": warmup_steps, "total_steps": total_steps, "base_lr": config.lr},
                "grad_scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": _rng_state(cuda),
                "best_epoch": best_epoch,
                "best_val_mAP": best_map,
                "epochs_without_improvement": bad_epochs,
                "stopped_early": stopped_early,
            }, last_path)
            if progress is not None:
                progress(log)
            epoch += 1

    return TrainResult(
        best_epoch=best_epoch,
        best_val_mAP=best_map,
        history=history,
        checkpoint=best_path,
        stopped_early=stopped_early,
        resumed_from=resumed_from,
        backbone_weights=asdict(model.weights),
        notes=notes,
    )


def load_reid_model(checkpoint: Path, device: str = "cpu") -> tuple[ReIDNet, dict[str, Any]]:
    """Load ``best.pt`` or ``last.pt`` (``weights_only=True``) -> (model in eval mode on ``device``,
    the saved :meth:`TrainConfig.to_json` dict). ``model.weights.weights_id`` is ``reid-<sha256[:12]>``
    of the file; ``model.checkpoint_info`` holds epoch, val metrics, manifest version and the initial
    backbone weights."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"ReIDNet checkpoint {path} does not exist")
    payload = _read_reid_checkpoint(path)
    if payload is None:
        raise ValueError(f"{path} is not a ReIDNet checkpoint ({CHECKPOINT_FORMAT}) readable with weights_only")
    config = dict(payload["config"])
    model = ReIDNet("random", seed=int(config.get("seed", 0)), dim=int(payload["dim"]))
    model.load_state_dict(payload["model"])
    short = _file_sha12(path)
    model.weights = LoadedWeights(
        "checkpoint",
        f"resnet50: ReIDNet checkpoint {path} (epoch {payload['epoch']}, val mAP {payload['val_mAP']:.3f}, "
        f"sha256 {short})",
        f"reid-{short}",
    )
    model.checkpoint_info = {
        "epoch": int(payload["epoch"]),
        "val_mAP": float(payload["val_mAP"]),
        "val_rank1": float(payload["val_rank1"]),
        "manifest_version": payload.get("manifest_version", ""),
        "backbone_weights": dict(payload.get("backbone_weights") or {}),
        "image_size": int(config["image_size"]),
    }
    dev = resolve_device(device)
    model.to(dev)
    if dev.startswith("cuda"):
        model.to(memory_format=torch.channels_last)
    return model.eval(), config
