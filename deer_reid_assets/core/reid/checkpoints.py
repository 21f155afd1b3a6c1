"""Checkpoints of a training run (``torch.save`` of plain dicts, loadable with ``weights_only=True``).

``best.pt`` (best validation epoch) and ``last.pt`` (every epoch, for resuming) hold ``format``,
``model`` (the ReIDNet state dict, no ID head), ``arch``, ``last_stride``, ``dim``, ``config``
(:meth:`TrainConfig.to_json`), ``manifest_version``, ``epoch``, ``val_mAP``, ``val_rank1``,
``history``, ``guard`` and ``backbone_weights``; ``last.pt`` adds the ID head, ``optimizer``,
``grad_scaler``, ``rng`` and the early-stopping state. Either loads with :func:`load_reid_model` and
either can be the ``backbone_weights`` of a new run (continue training on new labels).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deer_reid_assets.core.embed.backbones import LoadedWeights
from deer_reid_assets.core.embed.device import resolve_device

from .config import TrainConfig
from .network import CHECKPOINT_FORMAT, ReIDNet, file_sha12, read_reid_checkpoint

BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = ("epochs", "early_stopping_patience", "num_workers")


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def atomic_save(payload: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def rng_state(cuda: bool) -> dict[str, Any]:
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if cuda else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": list(py_state), "gauss": gauss},
    }


def set_rng_state(state: Mapping[str, Any], cuda: bool) -> None:
    torch.set_rng_state(state["torch"])
    if cuda and state.get("cuda"):
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))


def load_resume_state(path: Path, config: TrainConfig, manifest_version: str, data_fingerprint: str) -> dict[str, Any]:
    """The ``last.pt`` payload to resume from, or ValueError (one line) when it belongs to another run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ValueError(f"{path} cannot be read ({first}): delete it to start over") from None
    if not isinstance(state, Mapping) or state.get("format") != CHECKPOINT_FORMAT or "optimizer" not in state:
        raise ValueError(f"{path} is not a resumable ReIDNet checkpoint: delete it or use another out_dir")
    saved, current = dict(state["config"]), config.to_json()
    differences = [f"{key}: {saved.get(key)!r} -> {value!r}" for key, value in current.items()
                   if key not in RESUMABLE_CHANGES and saved.get(key) != value]
    if state.get("manifest_version", "") != manifest_version:
        differences.append(f"manifest_version: {state.get('manifest_version')!r} -> {manifest_version!r}")
    if state.get("data_fingerprint") != data_fingerprint:
        differences.append("train/val items differ")
    if differences:
        raise ValueError(f"{path} belongs to a different run ({'; '.join(differences)}): use another out_dir, "
                         f"or delete {LAST_CHECKPOINT} and {BEST_CHECKPOINT} there to start over")
    return dict(state)


def load_reid_model(checkpoint: Path, device: str = "cpu") -> tuple[ReIDNet, dict[str, Any]]:
    """Load ``best.pt`` or ``last.pt`` -> (model in eval mode on ``device``, its config dict).
    ``model.weights.weights_id`` is ``reid-<sha256[:12]>`` of the file; ``model.checkpoint_info`` holds
    epoch, validation figures, guard status, manifest version and the initial backbone weights."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"ReIDNet checkpoint {path} does not exist")
    payload = read_reid_checkpoint(path)
    if payload is None:
        raise ValueError(f"{path} is not a ReIDNet checkpoint ({CHECKPOINT_FORMAT}) readable with weights_only")
    config = dict(payload["config"])
    model = ReIDNet("random", arch=payload.get("arch", "resnet50"), last_stride=int(payload.get("last_stride", 2)),
                    seed=int(config.get("seed", 0)), dim=int(payload["dim"]))
    state = {k.replace("head.", "reduce.", 1) if k.startswith("head.") else k: v for k, v in payload["model"].items()}
    model.load_state_dict(state)
    short = file_sha12(path)
    model.weights = LoadedWeights(
        "checkpoint", f"{model.arch}: ReIDNet checkpoint {path} (epoch {payload['epoch']}, val mAP "
        f"{payload['val_mAP']:.3f}, sha256 {short})", f"reid-{short}")
    model.checkpoint_info = {
        "epoch": int(payload["epoch"]),
        "val_mAP": float(payload["val_mAP"]),
        "val_rank1": float(payload["val_rank1"]),
        "status": (payload.get("guard") or {}).get("status", "unknown"),
        "manifest_version": payload.get("manifest_version", ""),
        "backbone_weights": dict(payload.get("backbone_weights") or {}),
        "image_size": int(config["image_size"]),
    }
    dev = resolve_device(device)
    model.to(dev)
    if dev.startswith("cuda"):
        model.to(memory_format=torch.channels_last)
    return model.eval(), config
