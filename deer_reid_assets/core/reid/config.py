"""Hyper-parameters of one training run of the deer-specific re-ID model, and the named profiles.

The recipe is the "Bag of Tricks" one (Luo et al. 2019): an ID loss (cross-entropy with label
smoothing) through a bias-free classifier on the BN-neck feature plus a batch-hard triplet loss on
the pre-BN feature, Adam with linear warm-up and cosine decay, random erasing, last stride 1.
``head='arcface'`` swaps the classifier for a sub-center ArcFace head (the choice of Wildbook's
MiewID). Horizontal flips are off by default: a deer's left and right flanks (and its asymmetric
antlers) are different evidence, so a flipped left flank would be a fake right flank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ARCHS = ("resnet18", "resnet34", "resnet50")
HEADS = ("bnneck", "arcface")
OPTIMIZERS = ("adam", "adamw", "sgd")
PROFILES = ("full", "cpu")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (see the module docstring; every field is validated with a one-line error)."""

    epochs: int = 60
    image_size: int = 224
    arch: str = "resnet50"
    last_stride: int = 1
    head: str = "bnneck"  # 'bnneck' (softmax ID loss) | 'arcface' (sub-center ArcFace)
    p: int = 16  # identities per batch
    k: int = 4  # crops per identity in a batch
    margin: float = 0.3  # triplet margin
    soft_margin: bool = False
    id_weight: float = 1.0
    triplet_weight: float = 1.0
    label_smoothing: float = 0.1
    arcface_margin: float = 0.3
    arcface_scale: float = 30.0
    arcface_subcenters: int = 3
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    warmup_epochs: int = 5
    batches_per_epoch: int | None = None  # None: usable train crops // (p * k), at least 1
    early_stopping_patience: int = 10
    val_every: int = 1  # validate after every n-th epoch (and the last); the best epoch is among those
    flip: bool = False
    random_erasing: float = 0.5
    seed: int = 0
    backbone_weights: str = "auto"  # 'auto' | 'imagenet' | 'random' | a state-dict file | a ReIDNet checkpoint
    num_workers: int = 0
    amp: bool = True  # mixed precision: CUDA, or a CPU with bf16 units (core.embed.device.cpu_has_bf16_units)

    def __post_init__(self) -> None:
        if isinstance(self.backbone_weights, Path):
            object.__setattr__(self, "backbone_weights", str(self.backbone_weights))
        checks = [
            ("epochs", self.epochs >= 1, "at least 1"),
            ("image_size", self.image_size >= 32, "at least 32"),
            ("arch", self.arch in ARCHS, f"one of {', '.join(ARCHS)}"),
            ("last_stride", self.last_stride in (1, 2), "1 or 2"),
            ("head", self.head in HEADS, f"one of {', '.join(HEADS)}"),
            ("p", self.p >= 2, "at least 2 (negatives need a second identity)"),
            ("k", self.k >= 2, "at least 2 (positives need a second crop)"),
            ("margin", self.margin >= 0, ">= 0"),
            ("id_weight", self.id_weight >= 0, ">= 0"),
            ("triplet_weight", self.triplet_weight >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("arcface_margin", self.arcface_margin >= 0, ">= 0"),
            ("arcface_scale", self.arcface_scale > 0, "> 0"),
            ("arcface_subcenters", self.arcface_subcenters >= 1, "at least 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
            ("lr", self.lr >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("batches_per_epoch", self.batches_per_epoch is None or self.batches_per_epoch >= 1,
             "None or at least 1"),
            ("early_stopping_patience", self.early_stopping_patience >= 1, "at least 1"),
            ("val_every", self.val_every >= 1, "at least 1"),
            ("random_erasing", 0 <= self.random_erasing <= 1, "in [0, 1]"),
            ("seed", self.seed >= 0, ">= 0"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {rule}; got {getattr(self, name)!r}")
        if self.id_weight == 0 and self.triplet_weight == 0:
            raise ValueError("TrainConfig: id_weight and triplet_weight cannot both be 0")
        if not isinstance(self.backbone_weights, str) or not self.backbone_weights:
            raise ValueError(f"TrainConfig.backbone_weights must be a non-empty string; got {self.backbone_weights!r}")

    @classmethod
    def cpu_profile(cls, **overrides: Any) -> TrainConfig:
        """What learns from random init in about 3 minutes on 2 idle CPU cores: ResNet18 at 80 px, last
        stride 2 (a 3 x 3 final map is plenty at this size and 4x cheaper), 400 steps of 8 x 4 crops at a
        higher learning rate (no pretrained start to protect), validated after every second epoch (a
        validation pass costs about a third of an epoch's training here)."""
        values: dict[str, Any] = {
            "epochs": 40, "image_size": 80, "arch": "resnet18", "last_stride": 2, "p": 8, "k": 4, "lr": 2e-3,
            "warmup_epochs": 2, "batches_per_epoch": 10, "early_stopping_patience": 30, "val_every": 2,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> TrainConfig:
        """``'full'`` (the defaults: ResNet50 at 224 px, for a GPU) or ``'cpu'``."""
        if name not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}; got {name!r}")
        return cls.cpu_profile(**overrides) if name == "cpu" else cls(**overrides)

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
