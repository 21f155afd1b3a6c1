"""The training loop: P x K batches, ID + triplet loss, per-epoch validation and collapse guard.

Per step: ``loss = id_weight * id_loss(head(BN-neck feature)) + triplet_weight * batch_hard(pre-BN)``;
the learning rate is set before every step (linear warm-up over ``warmup_epochs``, then cosine decay
to 0). Mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler, and
channels_last) and on a CPU with bf16 units (AMX / AVX512-BF16: bf16 autocast of the forward pass).
Before the first epoch the untrained network is validated (epoch 0 of the history); after every epoch
the validation figures of :mod:`guard` are recorded, checkpoints written and the callbacks called.
The best epoch is the one with the highest validation mAP (ties: rank-1, then the lower
different-deer cosine); early stopping after ``early_stopping_patience`` epochs without improvement.
At the end :func:`guard.verdict` marks the run ``ok`` or ``collapsed``.

*Determinism and resuming*: the global torch RNG is re-seeded from ``(seed, epoch)`` at the start of
every epoch and the sampler is seeded the same way, so a run resumed from ``last.pt`` continues as an
uninterrupted one would (on CPU). :func:`train` runs inside ``torch.random.fork_rng`` and, on CPU, with
``torch.use_deterministic_algorithms(True, warn_only=True)``.
"""

from __future__ import annotations

import math
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
from torch import nn
from torch.utils.data import DataLoader

from deer_reid_assets.core.embed.backbones import LoadedWeights
from deer_reid_assets.core.embed.device import cpu_has_bf16_units, resolve_device

from . import guard
from .checkpoints import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    atomic_save,
    cpu_state_dict,
    load_resume_state,
    rng_state,
    set_rng_state,
)
from .config import TrainConfig
from .data import (
    BatchAugment,
    Images,
    ImageSource,
    autocast_dtype,
    embed_dataset,
    eval_transform,
    fingerprint,
    train_augmentations,
    unzip,
)
from .losses import LinearHead, SubCenterArcFace, batch_hard_triplet_loss, id_loss
from .network import CHECKPOINT_FORMAT, ReIDNet
from .sampler import PKSampler

NOT_VALIDATED = ("val_rank1", "val_mAP", "same_cosine", "different_cosine", "top_pc_share")
MIN_IMPROVEMENT = 1e-6  # a validation mAP must beat the best by more than this to count
VAL_BATCH_SIZE = 64


@dataclass
class EpochLog:
    epoch: int  # 1-based; 0 = the untrained network
    loss: float  # mean training loss over the epoch's steps (nan for epoch 0)
    id_loss: float
    triplet_loss: float
    val_rank1: float
    val_mAP: float
    same_cosine: float  # mean cosine of same-deer validation pairs
    different_cosine: float  # ... of different-deer pairs
    top_pc_share: float  # variance share of the top principal component of the validation embeddings
    lr: float  # learning rate of the epoch's last step
    seconds: float  # wall time of the epoch, validation included
    images_per_s: float  # training images / training time (validation excluded)

    @property
    def validated(self) -> bool:
        return not math.isnan(self.val_mAP)

    def describe(self, epochs: int, noun: str = "deer") -> str:
        """One progress line: losses, then the validation figures or that this epoch was not validated."""
        line = (f"epoch {self.epoch}/{epochs}: loss {self.loss:.3f} (id {self.id_loss:.3f}, triplet "
                f"{self.triplet_loss:.3f}), ")
        if self.validated:
            line += (f"val rank-1 {self.val_rank1:.3f}, mAP {self.val_mAP:.3f}, different-{noun} cosine "
                     f"{self.different_cosine:.2f}, ")
        else:
            line += "not validated (val_every), "
        return line + f"{self.images_per_s:.1f} img/s, {self.seconds:.0f} s"


@dataclass
class TrainResult:
    best_epoch: int
    best_val_mAP: float
    best_val_rank1: float
    history: list[EpochLog]  # epoch 0 (untrained) first
    checkpoint: Path  # best.pt
    stopped_early: bool
    resumed_from: int | None  # epoch of the last.pt this call started from; None for a fresh run
    status: str = guard.OK  # 'ok' | 'collapsed'
    guard_message: str = ""
    backbone_weights: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def history_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(log) for log in self.history], columns=[f.name for f in fields(EpochLog)])

    def guard(self) -> dict[str, Any]:
        """What the model row stores: status, the one-line message, untrained and best figures."""
        untrained = asdict(self.history[0]) if self.history else {}
        best = next((asdict(h) for h in self.history if h.epoch == self.best_epoch), {})
        keys = ("val_rank1", "val_mAP", "same_cosine", "different_cosine", "top_pc_share")
        return {"status": self.status, "message": self.guard_message, "best_epoch": self.best_epoch,
                "untrained": {k: untrained.get(k) for k in keys}, "best": {k: best.get(k) for k in keys},
                "max_different_cosine": guard.MAX_DIFFERENT_COSINE}


Callback = Callable[[EpochLog], None]


def _better(log: EpochLog, best_map: float, best_r1: float, best_cos: float) -> bool:
    """Higher validation mAP; at an equal mAP (a small, saturated validation set), higher rank-1, then
    different deer further apart."""
    if abs(log.val_mAP - best_map) > MIN_IMPROVEMENT:
        return log.val_mAP > best_map
    if abs(log.val_rank1 - best_r1) > MIN_IMPROVEMENT:
        return log.val_rank1 > best_r1
    return log.different_cosine < best_cos - MIN_IMPROVEMENT


def lr_at(step: int, base: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to ``base`` over ``warmup_steps`` steps, then cosine decay towards 0."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, 0x5EED]).generate_state(1, dtype=np.uint64)[0] >> 1)


@contextmanager
def _determinism(enabled: bool) -> Iterator[None]:
    previous, previous_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def make_head(config: TrainConfig, dim: int, n_classes: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        if config.head == "arcface":
            return SubCenterArcFace(dim, n_classes, subcenters=config.arcface_subcenters,
                                    margin=config.arcface_margin, scale=config.arcface_scale)
        return LinearHead(dim, n_classes)


def make_optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer, fused (one kernel over all parameters per step, on CPU and CUDA alike): the
    per-tensor loop of the default implementation was 8% of a CPU training step."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay,
                               fused=True)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def train(
    train_items: Sequence[tuple[ImageSource, str]],
    val_items: Sequence[tuple[ImageSource, str]],
    config: TrainConfig,
    out_dir: Path,
    *,
    device: str = "cpu",
    callbacks: Sequence[Callback] = (),
    progress: Callback | None = None,
    manifest_version: str = "",
    confusers: Mapping[str, Sequence[str]] | None = None,
    val_gallery: Sequence[tuple[ImageSource, str]] | None = None,
) -> TrainResult:
    """Train a :class:`ReIDNet`; write ``best.pt`` and ``last.pt`` under ``out_dir``, resuming from
    ``last.pt`` when it is there. ``train_items`` / ``val_items``: ``(image, identity)`` pairs;
    ``val_items`` needs an identity with two crops. ``callbacks`` (and ``progress``) get each
    epoch's :class:`EpochLog` once its checkpoints are written. ``confusers``: identity -> identities
    a person's corrections say it was confused with (hard negatives, see :class:`PKSampler`)."""
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    cuda = dev.startswith("cuda")
    train_sources, train_ids = unzip(train_items, "train_items")
    val_sources, val_ids = unzip(val_items, "val_items")
    gallery_sources, gallery_ids = unzip(val_gallery, "val_gallery") if val_gallery is not None else ([], [])
    if val_gallery is not None and not set(val_ids) & set(gallery_ids):
        raise ValueError("no identity of val_items is in val_gallery: there is nothing to retrieve")
    if val_gallery is None and not any(n >= 2 for n in Counter(val_ids).values()):
        raise ValueError("val_items must hold at least one identity with 2 or more crops")
    sampler = PKSampler(train_ids, config.p, config.k, batches=config.batches_per_epoch, seed=config.seed,
                        confusers=confusers)
    notes: list[str] = []
    if sampler.excluded:
        notes.append(f"{len(sampler.excluded)} single-crop identities left out of training: "
                     f"{', '.join(sampler.excluded[:10])}{' ...' if len(sampler.excluded) > 10 else ''}")
    if sampler.p < config.p:
        notes.append(f"only {sampler.p} identities with 2+ crops: batches hold {sampler.p} x {config.k}")
    codes = {identity: i for i, identity in enumerate(sampler.identities)}
    cache = config.image_size if config.num_workers == 0 else None
    train_set = Images(train_sources, [codes.get(i, -1) for i in train_ids],
                       train_augmentations(config.image_size, flip=config.flip), cache)
    augment = BatchAugment(erasing=config.random_erasing)
    val_set = Images(val_sources + gallery_sources, [0] * (len(val_sources) + len(gallery_sources)),
                     eval_transform(config.image_size), cache)
    val_labels = val_ids + gallery_ids
    if val_gallery is not None:
        val_split = guard.gallery_split(len(val_sources), len(gallery_sources))
        data_fp = fingerprint((train_sources, train_ids), (val_sources, val_ids), (gallery_sources, gallery_ids))
    else:
        val_split = guard.validation_split(val_ids, config.seed)
        data_fp = fingerprint((train_sources, train_ids), (val_sources, val_ids))
    out_dir.mkdir(parents=True, exist_ok=True)
    best_path, last_path = out_dir / BEST_CHECKPOINT, out_dir / LAST_CHECKPOINT
    state = load_resume_state(last_path, config, manifest_version, data_fp) if last_path.is_file() else None
    if state is not None and not best_path.is_file():
        raise ValueError(f"{last_path} exists but {best_path} does not: delete {last_path} to start over")
    listeners = [*callbacks, *([progress] if progress else [])]

    def validate(model: ReIDNet) -> dict[str, float]:
        emb = embed_dataset(model, val_set, dev, VAL_BATCH_SIZE, config.num_workers, config.amp)
        return guard.validation_figures(emb, val_labels, val_split)

    devices = [torch.device(dev).index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices), _determinism(not cuda):
        if state is None:
            model = ReIDNet(config.backbone_weights, arch=config.arch, last_stride=config.last_stride, seed=config.seed)
        else:
            model = ReIDNet("random", arch=state["arch"], last_stride=int(state["last_stride"]), seed=config.seed)
            model.load_state_dict(state["model"])
            model.weights = LoadedWeights(**state["backbone_weights"])
        head = make_head(config, model.dim, len(sampler.identities), config.seed)
        model.to(dev)
        head.to(dev)
        if cuda:
            model.to(memory_format=torch.channels_last)
        params = [p for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
        optimizer = make_optimizer(config, params)
        use_amp = config.amp and (cuda or cpu_has_bf16_units())
        amp_dtype = autocast_dtype() if cuda else torch.bfloat16
        if use_amp and not cuda:
            notes.append("training steps and validation in bf16 mixed precision on this CPU (it has bf16 units)")
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        steps_per_epoch = len(sampler)
        warmup_steps, total_steps = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch

        best_epoch, best_map, best_r1, bad_epochs, resumed_from = 0, -1.0, 0.0, 0, None
        best_cos = float("inf")
        if state is not None:
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
            if state.get("grad_scaler") and scaler.is_enabled():
                scaler.load_state_dict(state["grad_scaler"])
            set_rng_state(state["rng"], cuda)
            history = [EpochLog(**h) for h in state["history"]]
            best_epoch, best_map = int(state["best_epoch"]), float(state["best_val_mAP"])
            best_r1 = float(state["best_val_rank1"])
            best_cos = next(h.different_cosine for h in history if h.epoch == best_epoch)
            bad_epochs, resumed_from = int(state["epochs_without_improvement"]), int(state["epoch"])
        else:
            started = time.perf_counter()
            figures = validate(model)
            nan = float("nan")
            history = [EpochLog(0, nan, nan, nan, lr=0.0, seconds=time.perf_counter() - started, images_per_s=nan,
                                **figures)]
        start = (resumed_from or 0) + 1
        stopped_early = bad_epochs >= config.early_stopping_patience and start <= config.epochs
        common = {"format": CHECKPOINT_FORMAT, "config": config.to_json(), "manifest_version": manifest_version,
                  "data_fingerprint": data_fp, "dim": model.dim, "arch": model.arch, "last_stride": model.last_stride,
                  "backbone_weights": asdict(model.weights)}

        epoch = start
        while not stopped_early and epoch <= config.epochs:
            started = time.perf_counter()
            torch.manual_seed(_epoch_seed(config.seed, epoch))
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.num_workers, pin_memory=cuda)
            model.train()
            head.train()
            terms: list[tuple[float, float, float]] = []
            n_images, lr = 0, config.lr
            for step, (x, y) in enumerate(loader):
                lr = lr_at((epoch - 1) * steps_per_epoch + step, config.lr, warmup_steps, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = augment(x.to(dev, non_blocking=True)), y.to(dev, non_blocking=True)
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda" if cuda else "cpu", dtype=amp_dtype, enabled=use_amp):
                    pre, neck = model.features(x)
                ident = id_loss(head(neck.float(), y), y, config.label_smoothing) if config.id_weight else pre.sum() * 0
                trip = (batch_hard_triplet_loss(pre.float(), y, config.margin, config.soft_margin)
                        if config.triplet_weight else pre.sum() * 0)
                loss = config.id_weight * ident + config.triplet_weight * trip
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {step + 1}: "
                                             "lower the lr or disable amp")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                terms.append((float(loss.detach()), float(ident.detach()), float(trip.detach())))
                n_images += int(x.shape[0])
            train_seconds = time.perf_counter() - started
            validated = epoch % config.val_every == 0 or epoch == config.epochs
            figures = validate(model) if validated else dict.fromkeys(NOT_VALIDATED, float("nan"))
            mean = np.mean(terms, axis=0) if terms else [float("nan")] * 3
            log = EpochLog(epoch, float(mean[0]), float(mean[1]), float(mean[2]), lr=float(lr),
                           seconds=time.perf_counter() - started,
                           images_per_s=n_images / train_seconds if train_seconds > 0 else float("nan"), **figures)
            history.append(log)
            plain = [asdict(h) for h in history]
            if not validated:
                for listener in listeners:
                    listener(log)
                epoch += 1
                continue  # nothing to compare: no checkpoint either (a resume repeats this epoch)
            if _better(log, best_map, best_r1, best_cos):
                best_epoch, best_map, best_r1 = epoch, log.val_mAP, log.val_rank1
                best_cos = log.different_cosine
                atomic_save({**common, "model": cpu_state_dict(model), "epoch": epoch, "val_mAP": log.val_mAP,
                             "val_rank1": log.val_rank1, "history": plain}, best_path)
            bad_epochs = epoch - best_epoch  # epochs since the last improvement
            stopped_early = bad_epochs >= config.early_stopping_patience and epoch < config.epochs
            atomic_save({**common, "model": cpu_state_dict(model), "head": cpu_state_dict(head), "epoch": epoch,
                         "val_mAP": log.val_mAP, "val_rank1": log.val_rank1, "history": plain,
                         "optimizer": optimizer.state_dict(),
                         "grad_scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": rng_state(cuda),
                         "best_epoch": best_epoch, "best_val_mAP": best_map, "best_val_rank1": best_r1,
                         "epochs_without_improvement": bad_epochs, "stopped_early": stopped_early}, last_path)
            for listener in listeners:
                listener(log)
            epoch += 1

    best = next(h for h in history if h.epoch == best_epoch) if best_epoch else history[0]
    status, message = guard.verdict(asdict(history[0]), asdict(best))
    result = TrainResult(best_epoch=best_epoch, best_val_mAP=best_map, best_val_rank1=best_r1, history=history,
                         checkpoint=best_path, stopped_early=stopped_early, resumed_from=resumed_from, status=status,
                         guard_message=message, backbone_weights=asdict(model.weights), notes=notes)
    if best_path.is_file():  # the verdict travels with the model file
        payload = torch.load(best_path, map_location="cpu", weights_only=True)
        atomic_save({**payload, "guard": result.guard()}, best_path)
    return result
